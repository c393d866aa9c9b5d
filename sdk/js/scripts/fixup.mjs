// The package has no "type", so each build directory says how Node must read
// its .js files: without these, Node would load the ESM build as CommonJS.
import { writeFileSync } from 'node:fs';
writeFileSync(new URL('../dist/esm/package.json', import.meta.url), '{"type":"module"}\n');
writeFileSync(new URL('../dist/cjs/package.json', import.meta.url), '{"type":"commonjs"}\n');
