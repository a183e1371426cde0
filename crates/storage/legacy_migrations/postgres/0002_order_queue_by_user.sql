-- Lets a user's still-queued order requests be listed (GET /orders shows them as pending).
CREATE INDEX order_queue_by_user ON order_queue (user_id);
