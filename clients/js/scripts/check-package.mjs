#!/usr/bin/env node
// What `npm pack` would publish: the built ESM and CJS code with their types, the README and
// package.json, and nothing else (no sources, tests, examples or scripts). Prints its size.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const manifest = JSON.parse(readFileSync(path.join(pkg, 'package.json'), 'utf8'));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const [packed] = JSON.parse(execFileSync(npm, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: pkg, encoding: 'utf8' }));
const files = packed.files.map((f) => f.path);
const failures = [];

const required = ['package.json', 'README.md', 'dist/cjs/package.json'];
for (const entry of Object.values(manifest.exports['.']).flatMap((c) => Object.values(c))) required.push(entry.replace(/^\.\//, ''));
for (const f of [manifest.main, manifest.module, manifest.types]) required.push(f.replace(/^\.\//, ''));
for (const f of required) {
  if (!files.includes(f)) failures.push(`the package lacks ${f}`);
  if (!existsSync(path.join(pkg, f))) failures.push(`${f} does not exist (build first)`);
}
for (const f of files) {
  if (!/^(package\.json|README\.md|dist\/(esm|cjs)\/.+\.(js|d\.ts)|dist\/cjs\/package\.json)$/.test(f)) failures.push(`the package should not contain ${f}`);
}
if (Object.keys(manifest.dependencies ?? {}).join() !== 'socket.io-client') failures.push('socket.io-client must be the only runtime dependency');

if (failures.length) {
  for (const f of failures) console.error(f);
  process.exit(1);
}
console.log(`clients/js: npm pack → ${packed.filename}, ${packed.files.length} files, ${(packed.size / 1024).toFixed(1)} KiB packed, ${(packed.unpackedSize / 1024).toFixed(1)} KiB unpacked`);
