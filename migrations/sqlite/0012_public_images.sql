-- Images registered by operators can be public: every project sees and uses them (only their
-- own project can remove them).
ALTER TABLE images ADD COLUMN public BOOLEAN NOT NULL DEFAULT FALSE;
