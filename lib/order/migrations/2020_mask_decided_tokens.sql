-- Payment tokens are kept only until the charge is decided (issue 18): mask
-- those of orders already past it. Data only; no column changes.
UPDATE order_orders
SET payment_method = substr(payment_method, 1, 8) || '…'
WHERE step NOT IN ('reserve', 'charge') AND payment_method NOT LIKE '%…';
