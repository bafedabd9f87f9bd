-- An admin's ListOrders with no customer named: every order, newest first.
CREATE INDEX IF NOT EXISTS order_orders_by_time ON order_orders (created_at, order_id);
