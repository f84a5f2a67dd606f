// Parses an AsyncAPI document with the official parser and fails on any
// error-level diagnostic. Usage: node validate.mjs <file>
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const file = process.argv[2];
if (!file) {
  console.error('usage: node validate.mjs <asyncapi document>');
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, 'utf8'));
const severities = ['error', 'warning', 'information', 'hint'];
for (const d of diagnostics) {
  console.error(`${severities[d.severity] ?? d.severity} ${d.code} at ${JSON.stringify(d.path)}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === 0);
if (!document || errors.length > 0) {
  console.error(`the document is not valid AsyncAPI (${errors.length} errors)`);
  process.exit(1);
}
console.log(`valid AsyncAPI ${document.version()} with ${document.allMessages().length} messages`);
