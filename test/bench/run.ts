// `npm run bench` / `make bench`: every benchmark, each against a baseline from the same run.
await import("./overhead.ts");
