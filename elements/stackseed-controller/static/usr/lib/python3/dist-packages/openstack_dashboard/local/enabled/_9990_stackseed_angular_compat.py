# Put into the controller image by stackseed (elements/stackseed-controller): Horizon loads the
# angular.lowercase/uppercase shim that Debian's angular-gettext 2.3.8 needs under AngularJS 1.8
# with its own scripts. A file with neither DASHBOARD nor PANEL needs FEATURE, or Horizon skips
# it. See docs/horizon.md.
FEATURE = True
ADD_JS_FILES = ["stackseed/angular-compat.js"]
