/*
 * stackseed: usage pie charts with nothing to show are left out instead of drawn with NaN.
 *
 * Horizon 25.3.0's admin hypervisors panel draws, for every placement resource provider, a
 * "PCPU Usage" chart whose data-used is {% widthratio provider.pcpus_used
 * provider.pcpus_capacity 100 %}. A compute node without [compute] cpu_dedicated_set has no
 * PCPU inventory, both values are None, Django's widthratio renders "" and
 * horizon.d3_pie_chart_usage.init turns parseInt("") into NaN: D3 then sets <path d="MNaN...">
 * once and on every frame of its 500 ms animation (32 console errors for one chart), and the
 * tile shows an empty disc with no figures. The same happens to any usage chart whose figures
 * are missing (a provider without MEMORY_MB or DISK_GB inventory, failed hypervisor
 * statistics).
 *
 * Before Horizon draws, every .pie-chart-usage whose data-used Horizon could not draw (neither
 * a [value, true] pair nor something parseInt reads as a number) loses that class, so Horizon's
 * init neither indexes nor draws it, and its tile (.d3_quota_bar) is hidden. Charts with a
 * number are untouched. Loaded through openstack_dashboard/local/enabled (ADD_JS_FILES), after
 * horizon.d3piechart.js and before horizon.init runs at DOM ready. See docs/horizon.md.
 */
(function (window) {
  'use strict';

  var horizon = window.horizon;
  var $ = window.jQuery;
  // What the browser test and the image build read: whether the wrapper is in place and how
  // many tiles the last draw left out.
  var state = {wrapped: false, hidden: 0};

  // The two cases horizon.d3_pie_chart_usage.init draws: a [value, true] pair (a number
  // without a chart) or a value parseInt reads as a number.
  function drawable(used) {
    if (used !== null && used !== undefined && used[1] === true) {
      return true;
    }
    return !isNaN(parseInt(used, 10));
  }

  if (horizon && horizon.d3_pie_chart_usage && $ &&
      typeof horizon.d3_pie_chart_usage.init === 'function') {
    var draw = horizon.d3_pie_chart_usage.init;
    horizon.d3_pie_chart_usage.init = function () {
      $('.pie-chart-usage').each(function () {
        var chart = $(this);
        if (!drawable(chart.data('used'))) {
          chart.removeClass('pie-chart-usage').addClass('stackseed-pie-chart-no-data');
          chart.closest('.d3_quota_bar').hide();
          state.hidden += 1;
        }
      });
      return draw.apply(this, arguments);
    };
    state.wrapped = true;
  }
  window.STACKSEED_PIE_CHART_NODATA = state;
}(window));
