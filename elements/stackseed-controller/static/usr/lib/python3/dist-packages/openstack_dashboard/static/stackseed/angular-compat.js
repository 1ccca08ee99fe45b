/*
 * stackseed: angular.lowercase and angular.uppercase for Horizon's third-party scripts.
 *
 * AngularJS 1.7 removed both helpers, and Debian serves AngularJS 1.8.3 (libjs-angularjs).
 * Debian's python3-xstatic-angular-gettext 2.4.1.0 points Horizon at libjs-angular-gettext
 * 2.3.8, whose `translate` directive still calls angular.lowercase (2.4.1 no longer does): the
 * directive fails to load, the console shows "TypeError: angular.lowercase is not a function"
 * and Angular templates stay untranslated. schema-form.js 0.8.13 calls angular.uppercase in an
 * API Horizon does not use. Both are defined again here, with AngularJS 1.6's behaviour, only
 * where they are missing. Loaded through openstack_dashboard/local/enabled (ADD_JS_FILES),
 * after angular and before Angular compiles anything. See docs/horizon.md.
 */
(function (window) {
  'use strict';

  var angular = window.angular;
  var added = [];

  function convertStrings(convert) {
    return function (value) {
      return typeof value === 'string' ? convert.call(value) : value;
    };
  }

  if (angular) {
    if (typeof angular.lowercase !== 'function') {
      angular.lowercase = convertStrings(String.prototype.toLowerCase);
      added.push('lowercase');
    }
    if (typeof angular.uppercase !== 'function') {
      angular.uppercase = convertStrings(String.prototype.toUpperCase);
      added.push('uppercase');
    }
  }
  // What this page needed: the image build looks for this name in the compressed scripts,
  // and the browser test reads it.
  window.STACKSEED_ANGULAR_COMPAT = added;
}(window));
