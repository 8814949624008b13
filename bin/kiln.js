#!/usr/bin/env node
// The kiln command. The implementation is compiled TypeScript in dist/.
import '../dist/src/cli/main.js';
