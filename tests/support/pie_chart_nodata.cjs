// What stackseed's pie-chart-nodata.js does to Horizon's horizon.d3_pie_chart_usage (a stand-in
// whose init records which charts it would draw) for tiles whose data-used jQuery reads as
// given: prints {state, drawn, hidden, sameThis} as JSON. Used by tests/test_horizon_compat.py.
// Usage: node pie_chart_nodata.cjs SCRIPT [--no-horizon]
'use strict';
const fs = require('fs');
const vm = require('vm');

const [script, flag] = process.argv.slice(2);
// data-used as jQuery's .data() hands it over: "" stays "", digits become numbers, "[5, true]"
// (quotapercent of an unlimited quota) becomes an array.
const charts = ['', 42, 0, 100, [5, true], null, 'abc'].map((used) => ({
  used, classes: new Set(['pie-chart-usage']), tileHidden: false,
}));

function wrap(list) {
  return {
    each(fn) { list.forEach((c) => fn.call(c)); return this; },
    data() { return list[0].used; },
    removeClass(name) { list.forEach((c) => c.classes.delete(name)); return this; },
    addClass(name) { list.forEach((c) => c.classes.add(name)); return this; },
    closest() { return {hide() { list.forEach((c) => { c.tileHidden = true; }); }}; },
  };
}
const $ = (what) => (typeof what === 'string'
  ? wrap(charts.filter((c) => c.classes.has(what.replace(/^\./, ''))))
  : wrap([what]));

let drawn = null;
let sameThis = null;
const usage = {
  init() {
    sameThis = this === usage;
    drawn = charts.filter((c) => c.classes.has('pie-chart-usage')).map((c) => c.used);
  },
};
const window = {jQuery: $};
if (flag !== '--no-horizon') {
  window.horizon = {d3_pie_chart_usage: usage};
}
vm.runInNewContext(fs.readFileSync(script, 'utf8'), {window});
if (window.horizon) {
  window.horizon.d3_pie_chart_usage.init();
}
process.stdout.write(JSON.stringify({
  state: window.STACKSEED_PIE_CHART_NODATA,
  drawn,
  hidden: charts.filter((c) => c.tileHidden).map((c) => c.used),
  sameThis,
}));
