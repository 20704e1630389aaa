// A real OpenID Connect provider for the tests (npm oidc-provider, pinned
// in package.json): on a free loopback port, with one confidential client
// registered for Confab's redirect URI. Its development login form accepts
// any account id (with any password); the account's `name` is that id and
// its `preferred_username` the id too when it is a valid Confab username.
//
//   OIDC_CLIENT_ID=confab OIDC_CLIENT_SECRET=s \
//   OIDC_REDIRECT_URI=http://127.0.0.1:8080/v1/auth/oidc/callback \
//   node e2e/oidc-provider.mjs
//
// prints `oidc-provider listening on http://127.0.0.1:PORT` (the issuer)
// once it serves, and runs until killed or its stdin closes.

import http from 'node:http';

// Whoever reads our output may stop reading: never die of that.
process.stdout.on('error', () => {});
process.stderr.on('error', () => {});
import Provider from 'oidc-provider';

const clientId = process.env.OIDC_CLIENT_ID ?? 'confab';
const clientSecret = process.env.OIDC_CLIENT_SECRET ?? 'confab-test-secret';
const redirectUris = (process.env.OIDC_REDIRECT_URI ?? '').split(',').filter(Boolean);
if (redirectUris.length === 0) {
  console.error('OIDC_REDIRECT_URI is required');
  process.exit(2);
}

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        const claims = { sub: id, name: id };
        if (/^[A-Za-z0-9_.-]{3,32}$/.test(id)) claims.preferred_username = id;
        return claims;
      },
    };
  },
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'] },
  // Put the profile claims in the ID token (Confab reads no userinfo).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['confab-test-cookie-key'] },
  // Quiet: the default renders a page asking to set these in production.
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

provider.on('server_error', (_ctx, err) => console.error('server_error', err));
server.on('request', provider.callback());
console.log(`oidc-provider listening on ${issuer}`);

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
