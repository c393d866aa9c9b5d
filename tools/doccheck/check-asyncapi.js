// Parses an AsyncAPI document with @asyncapi/parser, the parser AsyncAPI's own
// tools (Studio, the generator, the CLI) use, and fails on any diagnostic of
// severity error. Warnings are printed but allowed, like `redocly lint`'s.
// Usage: node check-asyncapi.js FILE
'use strict';

const { Parser, fromFile } = require('@asyncapi/parser');

// DiagnosticSeverity of @stoplight/types, which the parser reports with.
const severities = ['error', 'warning', 'info', 'hint'];

async function main(file) {
  const { document, diagnostics } = await fromFile(new Parser(), file).parse();
  let errors = 0;
  for (const d of diagnostics) {
    const severity = severities[d.severity] || String(d.severity);
    if (d.severity === 0) errors++;
    const line = d.range ? d.range.start.line + 1 : '?';
    console.log(`${file}:${line}: ${severity} ${d.code}: ${d.message} (at #/${(d.path || []).join('/')})`);
  }
  // The parser returns no document when it gives up; that is an error even
  // if, somehow, no diagnostic says so.
  if (errors > 0 || !document) {
    console.error(`${file}: ${errors} error(s); not a valid AsyncAPI document`);
    process.exit(1);
  }
  console.log(`${file}: valid AsyncAPI ${document.version()} (${diagnostics.length} warning(s) or notes)`);
}

if (process.argv.length !== 3) {
  console.error('usage: node check-asyncapi.js FILE');
  process.exit(2);
}
main(process.argv[2]).catch((err) => {
  console.error(err);
  process.exit(1);
});
