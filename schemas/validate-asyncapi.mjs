// Validates an AsyncAPI document with the official parser (@asyncapi/parser), which
// also resolves the referenced schema files and runs the AsyncAPI ruleset. Exits 1 on
// any error diagnostic (warnings are printed, not fatal). Usage:
//   node validate-asyncapi.mjs [asyncapi.yaml]
import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const file = path.resolve(process.argv[2] ?? path.join(here, 'asyncapi.yaml'));
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, file).parse();

const names = { 0: 'error', 1: 'warning', 2: 'info', 3: 'hint' };
let errors = 0;
for (const d of diagnostics) {
  if (d.severity === DiagnosticSeverity.Error) errors += 1;
  const where = d.path?.length ? ` at ${d.path.join('.')}` : '';
  const line = d.range ? `:${d.range.start.line + 1}` : '';
  console.log(`${names[d.severity] ?? d.severity}: ${d.code}: ${d.message}${where} (${d.source ?? path.basename(file)}${line})`);
}
if (!document || errors > 0) {
  console.error(`asyncapi: ${path.basename(file)} is NOT valid (${errors} error(s))`);
  process.exit(1);
}
const channels = document.channels().length;
const operations = document.operations().length;
const messages = document.components().messages().length;
console.log(`asyncapi: ${path.basename(file)} is valid AsyncAPI ${document.version()}: ${channels} channels, ${operations} operations, ${messages} messages`);
