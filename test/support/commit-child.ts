// A separate process that runs one full backup and kills itself (SIGKILL, no cleanup) right
// after the copy committed, before the slot it replaced is dropped.

import { runBackup } from "../../functions/backup.ts";
import { EventLog } from "../../functions/events.ts";
import { connectProjects } from "../../functions/project.ts";

const projects = connectProjects({ primary: process.env.PRIMARY_URL!, secondary: process.env.SECONDARY_URL! });
const events = new EventLog(projects);
await runBackup({ projects, events, afterCommit: () => void process.kill(process.pid, "SIGKILL") }, { mode: "full", verify: false });
process.stdout.write("backed up without crashing\n");
process.exit(0);
