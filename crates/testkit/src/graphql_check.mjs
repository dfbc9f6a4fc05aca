// Checks GraphQL SDL and documents with graphql-js (the reference implementation).
// Run by `tools::graphql_check` from the directory whose node_modules holds `graphql`.
// stdin:  {"sdl": "...", "documents": ["...", ...]}
// stdout: {"schema": "<printSchema>" | null, "schemaError": "<errors>" | null,
//          "documents": [["<error message>", ...], ...]}   (one list per document, [] = valid)
import { createRequire } from 'node:module';

// graphql 16 is CommonJS without an "exports" map: require it next to this file.
const require = createRequire(import.meta.url);
const { buildSchema, parse, printSchema, validate, validateSchema } = require('graphql');

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));

const out = { schema: null, schemaError: null, documents: [] };
let schema = null;
try {
  // Throws on SDL that does not parse or names unknown types; validateSchema then
  // checks what buildSchema leaves for later (a Query type, interfaces implemented, ...).
  const built = buildSchema(input.sdl);
  const errors = validateSchema(built);
  if (errors.length > 0) {
    out.schemaError = errors.map(String).join('\n');
  } else {
    schema = built;
    out.schema = printSchema(schema);
  }
} catch (e) {
  // String(GraphQLError) is its message followed by the location in the SDL.
  out.schemaError = String(e);
}
if (schema !== null) {
  for (const source of input.documents) {
    try {
      out.documents.push(validate(schema, parse(source)).map((e) => e.message));
    } catch (e) {
      // A syntax error: parse throws a single GraphQLError.
      out.documents.push([e.message ?? String(e)]);
    }
  }
}
process.stdout.write(JSON.stringify(out));
