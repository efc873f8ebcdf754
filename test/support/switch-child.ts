// A separate process that switches the active project and kills itself (SIGKILL, no
// cleanup) right after the step named by CRASH_AT.

import { EventLog } from "../../functions/events.ts";
import { connectProjects } from "../../functions/project.ts";
import { switchOver } from "../../functions/switchover.ts";

const projects = connectProjects({ primary: process.env.PRIMARY_URL!, secondary: process.env.SECONDARY_URL! });
const events = new EventLog(projects);
await switchOver(
  {
    projects,
    events,
    hooks: {
      step(name) {
        if (name === process.env.CRASH_AT) process.kill(process.pid, "SIGKILL");
      },
    },
  },
  { force: false },
);
process.stdout.write("switched without crashing\n");
process.exit(0);
