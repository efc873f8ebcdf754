// One switch in a process of its own; prints the switch result as one JSON line.

import { EventLog } from "../functions/events.ts";
import { claimProject, closeProjects, connectProjects } from "../functions/project.ts";
import { switchOver } from "../functions/switchover.ts";

const projects = connectProjects({ primary: process.env.PRIMARY_URL!, secondary: process.env.SECONDARY_URL! });
await Promise.all([claimProject(projects.primary), claimProject(projects.secondary)]);
const result = await switchOver({ projects, events: new EventLog(projects) }, { force: false });
await closeProjects(projects);
process.stdout.write(`${JSON.stringify(result)}\n`);
