// Validates AsyncAPI documents with the official parser (@asyncapi/parser), in one node process.
//
//   node dev/asyncapi/validate.mjs FILE...
//
// Prints one JSON line per file, in the order given: {"file", "errors": [...], "warnings": n}.
// Errors are the parser's diagnostics of severity 0 (schema violations, unresolvable $refs, ...),
// each with its path. The parser spends about a second of CPU per document (JSON Schema validation
// of the whole document), so the files are shared among worker threads, one per core (at most 4).
// Exit status: 0 when no file has an error, 1 otherwise, 2 on bad usage.
import { readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

async function check(parser, file) {
  const text = await readFile(file, "utf8");
  const { document, diagnostics } = await parser.parse(text, { source: file });
  const errors = diagnostics
    .filter((d) => d.severity === 0)
    .map((d) => `${d.code}: ${d.message} at /${d.path.join("/")}`);
  if (!document && errors.length === 0) errors.push("the parser returned no document");
  const warnings = diagnostics.filter((d) => d.severity === 1).length;
  return { file, errors, warnings };
}

async function work(files) {
  const { Parser } = await import("@asyncapi/parser");
  const parser = new Parser();
  const results = [];
  for (const file of files) results.push(await check(parser, file));
  return results;
}

function inWorker(files) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: files });
    worker.once("message", resolve);
    worker.once("error", reject);
    worker.once("exit", (code) => code !== 0 && reject(new Error(`validator worker exited with ${code}`)));
  });
}

if (!isMainThread) {
  parentPort.postMessage(await work(workerData));
} else {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: node dev/asyncapi/validate.mjs FILE...");
    process.exit(2);
  }
  const workers = Math.max(1, Math.min(availableParallelism(), 4, files.length));
  const shares = Array.from({ length: workers }, (_, index) => files.filter((_, i) => i % workers === index));
  const done = await Promise.all(shares.map(inWorker));
  const byFile = new Map(done.flat().map((result) => [result.file, result]));
  let failed = false;
  for (const file of files) {
    const result = byFile.get(file);
    failed ||= result.errors.length > 0;
    console.log(JSON.stringify(result));
  }
  process.exit(failed ? 1 : 0);
}
