// The sign-in / sign-up screen. One form: "Sign in" submits it; below it,
// "New to Confab?" has the optional display name and "Create account",
// which registers first. Server errors are shown inline. Below, "Sign in
// with …" buttons for the server's OpenID Connect providers; a first
// sign-in with one picks its username on `oidcSignupView`.

import { h } from './dom.js';
import { oidcBegin, oidcProviders, oidcSignup, signIn, signUp } from '../api.js';

export function authView(onSignedIn, notice) {
  const username = h('input', {
    id: 'auth-username', testid: 'username', name: 'username', autocomplete: 'username',
    required: true, autocapitalize: 'none', spellcheck: 'false', minlength: '3', maxlength: '32',
  });
  const password = h('input', {
    id: 'auth-password', testid: 'password', name: 'password', type: 'password',
    autocomplete: 'current-password', required: true, minlength: '8',
  });
  const displayName = h('input', {
    id: 'auth-display-name', testid: 'display-name', name: 'display-name', autocomplete: 'name', maxlength: '64',
  });
  const error = h('p.auth-error', { testid: 'auth-error', role: 'alert', hidden: !notice, text: notice || '' });
  const signInBtn = h('button.primary', { type: 'submit', testid: 'sign-in', text: 'Sign in' });
  const signUpBtn = h('button.secondary', { type: 'button', testid: 'sign-up', text: 'Create account' });

  const signInActions = h('div.auth-actions', signInBtn);
  const signUpActions = h('div.auth-actions', signUpBtn);

  async function go(register) {
    error.hidden = true;
    if (!form.reportValidity()) return;
    signInBtn.disabled = signUpBtn.disabled = true;
    try {
      const user = register
        ? await signUp(username.value.trim(), password.value, displayName.value.trim())
        : await signIn(username.value.trim(), password.value);
      onSignedIn(user);
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      (register ? signUpActions : signInActions).before(error); // next to the button used
      signInBtn.disabled = signUpBtn.disabled = false;
    }
  }

  const form = h('form.auth-card', {
    'aria-labelledby': 'auth-title',
    on: { submit: (e) => { e.preventDefault(); go(false); } },
  },
  h('div.brand', h('img', { src: '/app/icon.svg', alt: '', width: '48', height: '48' }),
    h('h1', { id: 'auth-title', text: 'Confab' })),
  h('p.muted', { text: 'Sign in, or create an account with a new username.' }),
  h('label', { for: 'auth-username', text: 'Username' }), username,
  h('p.hint', { text: '3–32 letters, digits, “_”, “.” or “-”.' }),
  h('label', { for: 'auth-password', text: 'Password' }), password,
  h('p.hint', { text: 'At least 8 characters.' }),
  error,
  signInActions,
  h('section.auth-new', { 'aria-labelledby': 'auth-new-title' },
    h('h2', { id: 'auth-new-title', text: 'New to Confab?' }),
    h('p.hint', { text: 'Choose a username and password above, then create your account.' }),
    h('label', { for: 'auth-display-name' }, 'Display name ', h('span.optional', { text: '(optional)' })), displayName,
    h('p.hint', { text: 'Shown to others instead of your username. You can change it later.' }),
    signUpActions));
  // Enter in the display name field creates the account: the name is only for that.
  displayName.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); signUpBtn.click(); }
  });
  signUpBtn.addEventListener('click', () => {
    password.autocomplete = 'new-password';
    go(true);
  });
  const view = h('main.auth-view', {}, form);
  setTimeout(() => username.focus(), 0);
  providerButtons(form, error);
  return view;
}

/** Adds "Sign in with …" buttons when the server has providers. */
async function providerButtons(form, error) {
  const providers = await oidcProviders();
  if (!providers.length) return;
  const buttons = providers.map((p) => h('button.secondary', {
    type: 'button', testid: `oidc-${p.id}`, text: `Sign in with ${p.name}`,
    on: {
      click: async (e) => {
        e.target.disabled = true;
        try {
          await oidcBegin(p.id);
        } catch (err) {
          error.textContent = err.message;
          error.hidden = false;
          e.target.disabled = false;
        }
      },
    },
  }));
  form.querySelector('.auth-new').before(h('section.auth-oidc', { 'aria-label': 'Other ways to sign in' },
    h('p.muted', { text: 'Or use an account you already have:' }), h('div.auth-actions', {}, ...buttons)));
}

/** A first sign-in with a provider: choose a username (and display name). */
export function oidcSignupView(offer, onSignedIn, onCancel) {
  const username = h('input', {
    id: 'oidc-username', testid: 'oidc-username', name: 'username', autocomplete: 'username',
    required: true, autocapitalize: 'none', spellcheck: 'false', minlength: '3', maxlength: '32',
    value: offer.suggested_username || '',
  });
  const displayName = h('input', {
    id: 'oidc-display-name', testid: 'oidc-display-name', name: 'display-name', autocomplete: 'name', maxlength: '64',
    value: offer.display_name || '',
  });
  const error = h('p.auth-error', { testid: 'auth-error', role: 'alert', hidden: true });
  const finish = h('button.primary', { type: 'submit', testid: 'oidc-finish', text: 'Create account' });
  const form = h('form.auth-card', {
    'aria-labelledby': 'oidc-title',
    on: {
      submit: async (e) => {
        e.preventDefault();
        error.hidden = true;
        if (!form.reportValidity()) return;
        finish.disabled = true;
        try {
          onSignedIn(await oidcSignup(offer.signup_token, username.value.trim(), displayName.value.trim()));
        } catch (err) {
          error.textContent = err.code === 'oidc_code_invalid'
            ? 'This sign-in has expired. Please sign in again.' : err.message;
          error.hidden = false;
          finish.disabled = false;
        }
      },
    },
  },
  h('div.brand', h('img', { src: '/app/icon.svg', alt: '', width: '48', height: '48' }),
    h('h1', { id: 'oidc-title', text: 'Welcome to Confab' })),
  h('p.muted', { text: 'You signed in for the first time. Choose the username others will find you by.' }),
  h('label', { for: 'oidc-username', text: 'Username' }), username,
  h('p.hint', { text: '3–32 letters, digits, “_”, “.” or “-”.' }),
  h('label', { for: 'oidc-display-name' }, 'Display name ', h('span.optional', { text: '(optional)' })), displayName,
  h('p.hint', { text: 'Shown to others instead of your username.' }),
  error,
  h('div.auth-actions', {}, finish,
    h('button.secondary', { type: 'button', text: 'Cancel', on: { click: () => onCancel() } })));
  setTimeout(() => username.focus(), 0);
  return h('main.auth-view', {}, form);
}
