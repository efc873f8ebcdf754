// A separate process that runs automatic (incremental) backups in a loop until killed.

import { runBackup } from "../../functions/backup.ts";
import { EventLog } from "../../functions/events.ts";
import { connectProjects } from "../../functions/project.ts";

const projects = connectProjects({ primary: process.env.PRIMARY_URL!, secondary: process.env.SECONDARY_URL! });
const events = new EventLog(projects);
for (;;) {
  const run = await runBackup({ projects, events }, { mode: "auto", verify: false });
  process.stdout.write(`${run.kind} ${run.rows}\n`);
}
