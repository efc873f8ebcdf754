-- Demo rows, loaded into the primary only (the standby gets them from a backup).
insert into public.customers (email, name)
select format('customer%s@example.com', g), format('Customer %s', g)
from generate_series(1, 200) g
on conflict (email) do nothing;
insert into public.orders (customer_id, total_cents, items)
select c.id, (c.id * 137) % 10000, jsonb_build_array(jsonb_build_object('sku', 'SKU-' || c.id, 'qty', 1 + c.id % 3))
from public.customers c
where not exists (select 1 from public.orders);
