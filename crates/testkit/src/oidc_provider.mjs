// A real OpenID provider (npm `oidc-provider`) for the OAuth tests, configured from the
// environment: OIDC_REDIRECT_URIS (JSON: the callbacks registered for both clients), and
// OIDC_ACCOUNTS (JSON: id → claims). Listens on 127.0.0.1, on a port of the system's
// choosing, and prints `listening <issuer>` once it serves. Its development interactions
// (a login form that takes any account id) stand in for the provider's own pages.
import http from 'node:http';
import Provider from 'oidc-provider';

const redirectUris = JSON.parse(process.env.OIDC_REDIRECT_URIS || '[]');
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS || '{}');

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const client = (id) => ({
    client_id: id,
    client_secret: `${id}-secret-0123456789abcdef0123456789`,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  });
  const provider = new Provider(issuer, {
    clients: [client('ferrobase'), client('other-app')],
    pkce: { required: () => true },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    // ID tokens live 30 s: a test moves the server's clock past that (and its minute of
    // tolerated skew) while the sign-in itself is still valid.
    ttl: { IdToken: 30 },
    cookies: { keys: ['oidc-test-cookie-key-0123456789'] },
    features: { devInteractions: { enabled: true } },
    async findAccount(ctx, id) {
      const claims = accounts[id];
      if (!claims) return undefined;
      return { accountId: id, async claims() { return { sub: id, ...claims }; } };
    },
  });
  provider.proxy = false;
  server.on('request', provider.callback());
  process.stdout.write(`listening ${issuer}\n`);
});
