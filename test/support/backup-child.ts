// A separate process that runs full backups in a loop until it is killed: the crash tests
// kill it at random moments.
import { connectProjects } from "../../functions/project.ts";
import { EventLog } from "../../functions/events.ts";
import { runBackup } from "../../functions/backup.ts";

const projects = connectProjects({ primary: process.env.PRIMARY_URL!, secondary: process.env.SECONDARY_URL! });
const events = new EventLog(projects);
for (;;) {
  const run = await runBackup({ projects, events }, { mode: "full", verify: false });
  process.stdout.write(`done ${run.id}\n`);
}
