// A separate process that runs full backups in a loop until it is killed: the crash tests
// kill it at random moments. With STAGED=1 each call is a staged one with no budget, so
// every call stages one table, catches up, or publishes.

import { runBackup } from "../../functions/backup.ts";
import { EventLog } from "../../functions/events.ts";
import { connectProjects } from "../../functions/project.ts";

const projects = connectProjects({ primary: process.env.PRIMARY_URL!, secondary: process.env.SECONDARY_URL! });
const events = new EventLog(projects);
for (;;) {
  const run = await runBackup(
    { projects, events },
    process.env.STAGED === "1" ? { mode: "full", verify: false, staged: true, budgetMs: 0 } : { mode: "full", verify: false },
  );
  process.stdout.write(`${run.status} ${run.id}\n`);
}
