// The load generator in a process of its own (the server keeps its own core).
// Prints one JSON line: the LoadResult.
import { load } from "./load.ts";

const headers: Record<string, string> = process.env.TOKEN ? { Authorization: `Bearer ${process.env.TOKEN}` } : {};
const result = await load(process.env.URL!, headers, Number(process.env.CLIENTS ?? 200), Number(process.env.SECONDS ?? 30));
process.stdout.write(`${JSON.stringify(result)}\n`);
