// Run by tests/test_horizon_compat.py with node: loads scripts into one sandbox in order, as a
// page would (the sandbox is `window`, its properties are globals), with an `angular` that
// only records what modules register, then prints what happened as JSON.
//
//   node angular_compat.cjs [--angular-has-helpers] SCRIPT...
'use strict';

const fs = require('fs');
const vm = require('vm');

const args = process.argv.slice(2);
const hasHelpers = args[0] === '--angular-has-helpers';
const scripts = hasHelpers ? args.slice(1) : args;

const directives = {};
const ngModule = {
  directive(name, factory) {
    directives[name] = factory;
    return ngModule;
  },
};
for (const kind of ['constant', 'factory', 'filter', 'provider', 'value', 'config', 'run']) {
  ngModule[kind] = () => ngModule;
}
const own = () => 'own';
const angular = { module: () => ngModule };
if (hasHelpers) {
  // AngularJS before 1.7 had both helpers: they must stay as they are.
  angular.lowercase = own;
  angular.uppercase = own;
}

const sandbox = { angular };
sandbox.window = sandbox;
vm.createContext(sandbox);
for (const script of scripts) {
  vm.runInContext(fs.readFileSync(script, 'utf8'), sandbox, { filename: script });
}

const report = { added: sandbox.STACKSEED_ANGULAR_COMPAT === undefined ? null :
  Array.from(sandbox.STACKSEED_ANGULAR_COMPAT) };
const samples = ['MiXeD Case', 42, null];
for (const name of ['lowercase', 'uppercase']) {
  const helper = angular[name];
  report[name] = typeof helper !== 'function' ? 'missing' :
    helper === own ? 'own' : samples.map((value) => helper(value));
}
if (directives.translate) {
  // What AngularJS does the first time a template uses the directive: call its factory.
  const factory = directives.translate;
  const fn = factory[factory.length - 1];
  const $window = { navigator: { userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Chrome/140' } };
  try {
    const directive = fn({}, () => () => undefined, {}, () => undefined, $window, {});
    report.translate = { restrict: directive.restrict, terminal: directive.terminal };
  } catch (error) {
    report.translate = { error: `${error.name}: ${error.message}` };
  }
}
process.stdout.write(JSON.stringify(report) + '\n');
