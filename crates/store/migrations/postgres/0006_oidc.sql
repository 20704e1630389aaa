-- OpenID Connect sign-in (issue 15).

-- Which provider account (issuer, subject) signs in as which user. One
-- provider account belongs to one user; a user may link several.
CREATE TABLE oidc_identities (
    issuer     TEXT COLLATE "C" NOT NULL,
    subject    TEXT COLLATE "C" NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX oidc_identities_user ON oidc_identities(user_id);

-- Short-lived single-use secrets of sign-ins in progress, by the SHA-256 of
-- the secret: a flow's `state` (with its PKCE verifier and nonce) until the
-- provider redirects back, then the one-time code the client exchanges. The
-- payload is the server's JSON; rows past `expires_at` are dead and purged
-- when new ones are written, and the table holds a bounded number of rows.
CREATE TABLE oidc_pending (
    key_hash   BYTEA PRIMARY KEY,
    payload    TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oidc_pending_expiry ON oidc_pending(expires_at);
