// Builds the real termhub binary once for every test file (they run as separate
// processes): `npm test` runs this first.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
mkdirSync(join(here, '..', '.test-bin'), { recursive: true });
execFileSync('go', ['build', '-o', join(here, '..', '.test-bin', 'termhub'), './cmd/termhub'], { cwd: root, stdio: 'inherit' });
