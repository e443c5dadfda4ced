// The build's non-TypeScript files: Lua scripts are read at run time next to the code.
import { cpSync } from "node:fs";

cpSync("extproc/src/budget/lua", "dist/budget/lua", { recursive: true });
cpSync("extproc/src/queue/lua", "dist/queue/lua", { recursive: true });
