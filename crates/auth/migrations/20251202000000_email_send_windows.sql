-- Mails sent per clock hour, shared by every replica of the auth service, for
-- the project-wide cap FERROBASE_RATE_LIMIT_EMAIL_SENT.
create table if not exists auth.email_send_windows (
  window_start timestamptz primary key,
  sent integer not null
);
alter table auth.email_send_windows enable row level security;

-- Audit entries are read newest first by time.
create index if not exists audit_log_entries_created_at_idx on auth.audit_log_entries (created_at);
