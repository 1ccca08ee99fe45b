# Put into the controller image by stackseed (elements/stackseed-controller): Horizon loads the
# script that leaves out usage pie charts with no figures (the hypervisors panel's PCPU chart of
# a compute node without PCPU inventory) instead of drawing them with NaN. A file with neither
# DASHBOARD nor PANEL needs FEATURE, or Horizon skips it. See docs/horizon.md.
FEATURE = True
ADD_JS_FILES = ["stackseed/pie-chart-nodata.js"]
