// The keyhole console: sign in, then route by the URL hash. Pages render into
// <main> and return a function that stops their timers.
import { api, path, getToken, setToken, clearSession, onSessionEnd } from './api.js';
import { h, field, errorBox, showError, hideError, busy } from './dom.js';
import { orgsPage } from './orgs.js';
import { keysPage } from './keys.js';
import { keyPage } from './key.js';
import { logsPage } from './logs.js';
import { usagePage } from './usage.js';
import { tokensPage } from './tokens.js';
import { auditPage } from './audit.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');

// session is who is signed in: {root, orgs}. It holds no secret.
let session = null;
let stop = null;

// whoIs learns what the token may do: the org list (an org admin sees only
// its own) and whether root-only endpoints answer.
async function whoIs(token) {
  const { orgs } = await api('GET', '/orgs', undefined, token);
  let root = true;
  try {
    await api('GET', '/logs?limit=1', undefined, token);
  } catch (e) {
    if (e.status !== 403) throw e;
    root = false;
  }
  return { root, orgs };
}

function route() {
  const [p, q] = location.hash.replace(/^#/, '').split('?');
  return { parts: p.split('/').filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(q || '') };
}

const home = () => (session.root ? '#/orgs' : `#/orgs/${encodeURIComponent(session.orgs[0].id)}/keys`);

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function signOut(message) {
  clearSession();
  session = null;
  history.replaceState(null, '', location.pathname);
  render(message);
}

onSessionEnd((err) => signOut(err));

function header() {
  nav.replaceChildren();
  who.replaceChildren();
  if (!session) return;
  if (session.root) nav.append(h('a', { href: '#/orgs' }, 'Organizations'), h('a', { href: '#/audit', id: 'nav-audit' }, 'Audit log'));
  who.append(h('span', { class: 'role' }, session.root ? 'Root admin' : 'Org admin'),
    h('button', { type: 'button', class: 'ghost small', id: 'sign-out', onclick: () => signOut() }, 'Sign out'));
}

function signInPage(message) {
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off',
    spellcheck: 'false', autocapitalize: 'off', placeholder: 'kh_admin_…' });
  const err = errorBox();
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { id: 'signin-form', novalidate: true },
    field('Admin token', input, 'The root admin token printed at first start, or an organization admin token.'),
    err, button);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    hideError(err);
    const token = input.value.trim();
    if (!token) {
      showError(err, { message: 'Enter an admin token.' });
      input.focus();
      return;
    }
    busy(button, async () => {
      try {
        session = await whoIs(token);
      } catch (e) {
        showError(err, e);
        input.focus();
        return;
      }
      setToken(token);
      input.value = '';
      if (!session.root && !session.orgs.length) {
        signOut({ message: 'This token belongs to no organization.' });
        return;
      }
      const [first, org] = route().parts;
      go((first === 'orgs' && org) || (first === 'audit' && session.root) ? location.hash : home());
    });
  });
  main.replaceChildren(h('section', { class: 'card signin' },
    h('h1', { tabindex: '-1' }, 'Sign in to keyhole'), form,
    h('p', { class: 'hint' }, 'The token is kept in this browser tab only (sessionStorage) and is cleared when you sign out or close the tab.')));
  if (message) showError(err, message);
  input.focus();
}

// orgHead is the organization's title and its tabs.
function orgHead(org, tab) {
  const link = (name, label) => h('a', { href: `#/orgs/${encodeURIComponent(org.id)}/${name}`,
    'aria-current': name === tab ? 'page' : null }, label);
  return h('div', { class: 'page-head' },
    session.root ? h('p', { class: 'crumb' }, h('a', { href: '#/orgs' }, 'Organizations'), ' / ') : null,
    h('h1', { tabindex: '-1' }, org.name),
    h('p', { class: 'hint' }, h('code', null, org.id)),
    h('nav', { class: 'tabs', 'aria-label': 'Organization' },
      link('keys', 'API keys'), link('logs', 'API logs'), link('usage', 'Usage'),
      link('tokens', 'Admin tokens'), link('audit', 'Audit log')));
}

const pages = { keys: keysPage, logs: logsPage, usage: usagePage, tokens: tokensPage, audit: auditPage };

async function render(message) {
  if (stop) stop();
  stop = null;
  if (!getToken()) {
    session = null;
    header();
    signInPage(message);
    return;
  }
  try {
    session ||= await whoIs(getToken());
  } catch (e) {
    if (!getToken()) return; // the session ended and sign-in is showing
    main.replaceChildren(h('section', { class: 'card' }, h('h1', null, 'The console could not load'),
      h('p', { class: 'error', role: 'alert' }, e.message),
      h('button', { type: 'button', class: 'primary', onclick: () => render() }, 'Try again')));
    return;
  }
  header();
  const { parts, params } = route();
  const view = h('div', { class: 'view' });
  if (parts[0] === 'audit' && session.root) {
    main.replaceChildren(view);
    stop = auditPage(view, { org: null, params, session });
    return;
  }
  if (parts[0] !== 'orgs' || (!parts[1] && !session.root)) {
    location.replace(home());
    return;
  }
  if (!parts[1]) {
    main.replaceChildren(view);
    stop = orgsPage(view, session);
    return;
  }
  const tab = pages[parts[2]] ? parts[2] : 'keys';
  let org = session.orgs.find((o) => o.id === parts[1]);
  if (!org) {
    try {
      org = await api('GET', path('orgs', parts[1]));
    } catch (e) {
      main.replaceChildren(h('section', { class: 'card' }, h('h1', null, 'Organization not found'),
        h('p', { class: 'error', role: 'alert' }, e.message), h('a', { href: home() }, 'Back')));
      return;
    }
    session.orgs.push(org);
  }
  main.replaceChildren(orgHead(org, tab), view);
  if (tab === 'keys' && parts[3]) stop = keyPage(view, { org, params, keyId: parts[3] });
  else stop = pages[tab](view, { org, params, session });
}

let lastPage = '';
window.addEventListener('hashchange', () => {
  const page = route().parts.slice(0, 4).join('/');
  render().then(() => {
    // tell keyboard and screen reader users where they are: a page's own
    // heading (a key's), or the organization's
    if (page !== lastPage) (main.querySelector('[data-heading]') || main.querySelector('h1'))?.focus();
    lastPage = page;
  });
});
render();
