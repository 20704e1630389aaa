// The sign-in / sign-up screen. One form: "Sign in" submits it, "Create
// account" registers first. Server errors are shown inline.

import { h } from './dom.js';
import { signIn, signUp } from '../api.js';

export function authView(onSignedIn, notice) {
  const username = h('input', {
    id: 'auth-username', testid: 'username', name: 'username', autocomplete: 'username',
    required: true, autocapitalize: 'none', spellcheck: 'false', minlength: '3', maxlength: '32',
  });
  const password = h('input', {
    id: 'auth-password', testid: 'password', name: 'password', type: 'password',
    autocomplete: 'current-password', required: true, minlength: '8',
  });
  const error = h('p.auth-error', { testid: 'auth-error', role: 'alert', hidden: !notice, text: notice || '' });
  const signInBtn = h('button.primary', { type: 'submit', testid: 'sign-in', text: 'Sign in' });
  const signUpBtn = h('button.secondary', { type: 'button', testid: 'sign-up', text: 'Create account' });

  async function go(register) {
    error.hidden = true;
    if (!form.reportValidity()) return;
    signInBtn.disabled = signUpBtn.disabled = true;
    try {
      const user = register
        ? await signUp(username.value.trim(), password.value)
        : await signIn(username.value.trim(), password.value);
      onSignedIn(user);
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
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
  h('div.auth-actions', signInBtn, signUpBtn));
  signUpBtn.addEventListener('click', () => {
    password.autocomplete = 'new-password';
    go(true);
  });
  const view = h('main.auth-view', {}, form);
  setTimeout(() => username.focus(), 0);
  return view;
}
