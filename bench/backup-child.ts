// One backup in a process of its own, so its peak memory and CPU time are its own.
// Prints one JSON line: {"ms", "maxRssMb", "cpuSeconds", "rows", "bytes", "kind", "applyMs"}.

import { runBackup } from "../functions/backup.ts";
import { EventLog } from "../functions/events.ts";
import { claimProject, closeProjects, connectProjects } from "../functions/project.ts";

const projects = connectProjects({ primary: process.env.PRIMARY_URL!, secondary: process.env.SECONDARY_URL! });
await Promise.all([claimProject(projects.primary), claimProject(projects.secondary)]);
const events = new EventLog(projects);
const started = performance.now();
const cpuBefore = process.cpuUsage();
const run = await runBackup({ projects, events }, { mode: (process.env.MODE as "full" | "auto") ?? "full", verify: false });
const ms = performance.now() - started;
const cpu = process.cpuUsage(cpuBefore);
await closeProjects(projects);
process.stdout.write(
  `${JSON.stringify({
    ms,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    rows: run.rows,
    bytes: run.bytes,
    kind: run.kind,
    applyMs: run.details.applyMs ?? null,
  })}\n`,
);
