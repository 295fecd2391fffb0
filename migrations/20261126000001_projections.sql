-- Projections of the email domain event log (contract §3). Every column is derived
-- from events; rebuilding from the log reproduces the rows exactly.

CREATE TABLE IF NOT EXISTS email_domains (
    id                  uuid PRIMARY KEY,
    tenant              uuid NOT NULL,
    domain_name         text NOT NULL,
    status              text NOT NULL,
    provider_id         text,
    provider_domain_id  text,
    dns_records         jsonb NOT NULL DEFAULT '[]'::jsonb,
    failure_reason      text,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    verified_at         timestamptz,
    dns_last_checked_at timestamptz,
    next_check_at       timestamptz,
    created_at          timestamptz,
    updated_at          timestamptz,
    -- The domain's event version this row reflects (no event is ever applied twice).
    version             bigint NOT NULL
);

-- At most one live registration per name.
CREATE UNIQUE INDEX IF NOT EXISTS email_domains_live_name
    ON email_domains (domain_name) WHERE status <> 'deactivated';
CREATE INDEX IF NOT EXISTS email_domains_tenant ON email_domains (tenant);
CREATE INDEX IF NOT EXISTS email_domains_status_updated ON email_domains (status, updated_at);

CREATE TABLE IF NOT EXISTS tenant_email_settings (
    tenant               uuid PRIMARY KEY,
    default_from_domain  text,
    previous_from_domain text,
    provider_configs     jsonb NOT NULL DEFAULT '[]'::jsonb,
    -- The tenant's verified registrations {domain_id: name}: what "still verified" means
    -- for the rollback rule.
    verified_domains     jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at           timestamptz
);

-- Each projector's position in the event stream, written in the same transaction as
-- its rows.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection  text PRIMARY KEY,
    stream_seq  bigint NOT NULL,
    -- Bumped by `domainctl replay` when it swaps in rebuilt tables: a live projector
    -- that sees a new generation drops its cache and continues from `stream_seq`.
    generation  bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The scheduler's timers, derived from events (one per domain: its next check).
CREATE TABLE IF NOT EXISTS scheduler_timers (
    domain_id    uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    domain       text NOT NULL,
    due_at       timestamptz NOT NULL,
    -- The due time that was last fired (a timer fires once per due time).
    fired_due_at timestamptz,
    fired_count  integer NOT NULL DEFAULT 0
);
-- Only timers not yet fired for their due time: a fired timer leaves the index, so a
-- tick never walks past the fired ones.
CREATE INDEX IF NOT EXISTS scheduler_timers_due ON scheduler_timers (due_at)
    WHERE fired_due_at IS DISTINCT FROM due_at;
