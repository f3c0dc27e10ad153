-- How a node is drained, kept apart from its liveness status so that a drain survives the
-- agent going away and coming back (an agent upgrade): NULL = not drained, 'evacuate' = move
-- its instances elsewhere, 'keep_instances' = place nothing new but leave its instances
-- running (maintenance such as an agent upgrade).
ALTER TABLE nodes ADD COLUMN drain TEXT;
UPDATE nodes SET drain = 'evacuate' WHERE status = 'draining';
