#!/usr/bin/env node
// The examples compile, and the README shows them as they are:
// 1. every fenced block preceded by `<!-- example: <path> -->` in README.md (this package's and the
//    repository's) equals that file (from `// @readme-start` on, when it has one), so the
//    documentation cannot drift from the checked code;
// 2. `tsc -p examples/tsconfig.json` type-checks examples/ (against the built package and the real
//    React Native libraries' types) and the repository's examples/first-call.mjs (checkJs).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const readmes = [path.join(pkg, 'README.md'), path.resolve(pkg, '..', '..', 'README.md')];
const failures = [];
let blocks = 0;

for (const readme of readmes) {
  const text = readFileSync(readme, 'utf8');
  const marker = /<!-- example: (\S+) -->\s*\n```[a-z]*\n([\s\S]*?)```/g;
  for (const [, file, block] of text.matchAll(marker)) {
    blocks += 1;
    // A file may open with declarations the README leaves out: it shows what follows `// @readme-start`.
    const whole = readFileSync(path.resolve(path.dirname(readme), file), 'utf8');
    const start = whole.indexOf('// @readme-start\n');
    const source = start >= 0 ? whole.slice(start + '// @readme-start\n'.length) : whole;
    if (source.trim() !== block.trim()) failures.push(`${path.relative(process.cwd(), readme)}: the block for ${file} differs from the file; copy the file into the README`);
  }
}
if (blocks === 0) failures.push('no `<!-- example: ... -->` blocks found in the READMEs');

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
try {
  execFileSync(process.execPath, [tsc, '-p', path.join(pkg, 'examples', 'tsconfig.json')], { stdio: 'inherit', cwd: pkg });
} catch {
  failures.push('the examples do not type-check (see above)');
}

if (failures.length) {
  for (const f of failures) console.error(f);
  process.exit(1);
}
console.log(`clients/js: the examples type-check and the READMEs show them as they are (${blocks} blocks)`);
