// Validates src/api/openapi.json as an OpenAPI 3.1 document with
// @seriousme/openapi-schema-validator (the OAS 3.1 JSON Schema, and every
// $ref resolved), from test/browser/node_modules (`npm ci` in this folder;
// `deps/install.sh --test` runs it). The ctest `openapi`. Without the
// validator it says so and exits 77 (skipped), or 1 under CI (CI set and
// not "false"), like run.mjs. The answers of the server are checked against
// the document by the integration suite (test/integration/openapi_check.py).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const file = process.argv[2] || path.join(here, "..", "..", "src", "api", "openapi.json");

let Validator;
try {
  ({ Validator } = await import("@seriousme/openapi-schema-validator"));
} catch (e) {
  const ci = process.env.CI && process.env.CI !== "false";
  console.log(`openapi check ${ci ? "failed" : "skipped"}: @seriousme/openapi-schema-validator ` +
              `not found (npm ci in test/browser): ${e.code || e.message}`);
  process.exit(ci ? 1 : 77);
}

const doc = JSON.parse(fs.readFileSync(file, "utf8"));
const problems = [];
const res = await new Validator().validate(structuredClone(doc));
if (!res.valid)
  for (const e of [].concat(res.errors || []))
    problems.push(typeof e === "string" ? e : `${e.instancePath || "/"}: ${e.message} ${JSON.stringify(e.params || {})}`);
if (!String(doc.openapi).startsWith("3.1.")) problems.push(`openapi is ${doc.openapi}, not 3.1.x`);

// What the OAS schema leaves to the tools: unique operationIds, and a
// success answer for every operation.
const ids = new Set();
let ops = 0;
for (const [p, item] of Object.entries(doc.paths || {}))
  for (const [m, op] of Object.entries(item)) {
    if (!["get", "put", "post", "delete", "patch"].includes(m)) continue;
    ops++;
    if (!op.operationId) problems.push(`${m.toUpperCase()} ${p}: no operationId`);
    else if (ids.has(op.operationId)) problems.push(`${m.toUpperCase()} ${p}: operationId ${op.operationId} twice`);
    ids.add(op.operationId);
    if (!Object.keys(op.responses || {}).some((s) => /^2\d\d$/.test(s)))
      problems.push(`${m.toUpperCase()} ${p}: no 2xx answer`);
  }

if (problems.length) {
  console.log(`${file}: not a valid OpenAPI 3.1 document:\n  ` + problems.join("\n  "));
  process.exit(1);
}
console.log(`${file}: valid OpenAPI ${doc.openapi}, ${ops} operations`);
