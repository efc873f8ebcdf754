-- Rows for the fixture, loaded into the primary. Repeatable: each call adds a batch.
insert into public.accounts (owner, balance) select 'owner ' || g, 1000 from generate_series(1, 100) g;

insert into public.employees (name, manager_id, tags, moods, mood, home, profile, salary, photo)
select 'employee ' || g,
  case when g > 1 then 1 + (g % greatest(g - 1, 1)) end,
  array['t' || g, 'x,y', 'quote"d', null],
  array['happy', 'sad']::public.mood[],
  (array['happy', 'sad', 'meh'])[1 + g % 3]::public.mood,
  row(g, -g)::public.point2,
  jsonb_build_object('n', g, 'nested', jsonb_build_object('list', jsonb_build_array(1, 'two', null)), 'text', E'line\nbreak\ttab é ✓'),
  g * 1.25,
  decode(md5(g::text), 'hex')
from generate_series(1, 300) g;

insert into public.projects (lead_id, title, budget)
select 1 + g % 50, 'project ' || g || ' ' || md5(random()::text), g * 0.1 from generate_series(1, 50) g;

insert into public.assignments (project_id, employee_id, hours)
select p.id, e.id, 1.5 from public.projects p join public.employees e on e.id % 7 = p.id % 7
on conflict do nothing;

insert into public.audit_log (message, payload) select 'event ' || g, jsonb_build_object('g', g) from generate_series(1, 200) g;
insert into public.audit_log (message, payload) values ('duplicate', '{}'), ('duplicate', '{}'), (null, null);

insert into public.measurements (taken_on, value)
select date '2025-06-01' + (g % 400), g / 3.0 from generate_series(1, 500) g;

insert into public.secrets (owner, note) select gen_random_uuid(), 'secret ' || g from generate_series(1, 40) g;

select nextval('public.invoice_numbers') from generate_series(1, 7);
