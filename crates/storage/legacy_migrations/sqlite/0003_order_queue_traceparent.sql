-- The accepting request's trace context (W3C traceparent), so the consumer's span can link to it.
ALTER TABLE order_queue ADD COLUMN traceparent TEXT NULL;
