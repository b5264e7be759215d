// A key's page: its record, its edit form (PATCH), disable / enable, roll
// and revoke, and its own usage chart and log.
import { api, path } from './api.js';
import { h, field, select, muted, errorBox, showError, hideError, busy, when, refreshTimes, fullTime } from './dom.js';
import { status, statusBadge, codes, words, parseLimits, limitsText, revokeKey, rollKey, keyHref } from './keys.js';
import { usageSection } from './usage.js';
import { logSection } from './logs.js';

// localInput is an RFC 3339 time as a datetime-local input's value.
function localInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
}

const EVERY = 15000;

const dateAndAgo = (iso) => [when(iso), ' ', muted(`(${fullTime(iso)})`)];

function creditsText(c) {
  if (!c) return muted('no usage limit');
  const left = `${c.remaining.toLocaleString('en')} requests left`;
  const r = c.refill;
  if (!r) return left;
  return `${left}; refilled to ${r.amount.toLocaleString('en')} ${r.interval === 'daily' ? 'daily' : `monthly on day ${r.day}`} (00:00 UTC)`;
}

export function keyPage(view, { org, params, keyId }) {
  const url = path('orgs', org.id, 'keys', keyId);
  let key = null;
  let initial = {}; // the form as filled from key, to send only what changed
  let stopped = false;
  const stops = [];

  const slot = h('div', { class: 'reveal-slot' });
  const title = h('h2', { id: 'key-h', tabindex: '-1', 'data-heading': '' }, 'API key');
  const badges = h('span', { class: 'key-badges' });
  const toggle = h('button', { type: 'button', class: 'small', id: 'key-toggle' });
  const roll = h('button', { type: 'button', class: 'small roll', id: 'key-roll' }, 'Roll');
  const revoke = h('button', { type: 'button', class: 'small danger revoke', id: 'key-revoke' }, 'Revoke');
  const audit = h('a', { class: 'button small ghost', id: 'key-audit',
    href: `#/orgs/${encodeURIComponent(org.id)}/audit?target=${encodeURIComponent(keyId)}` }, 'Audit');
  const actions = h('div', { class: 'key-actions', hidden: true }, audit, toggle, roll, revoke);
  const actionErr = errorBox();
  const rolledNote = h('p', { class: 'hint', id: 'key-rolled', hidden: true });
  const record = h('dl', { class: 'record', id: 'key-record' });

  const name = h('input', { type: 'text', id: 'edit-name', autocomplete: 'off', maxlength: '200' });
  const scopes = h('input', { type: 'text', id: 'edit-scopes', autocomplete: 'off', placeholder: 'sms:send, sms:read' });
  const limits = h('input', { type: 'text', id: 'edit-limits', autocomplete: 'off', placeholder: '5/1m, 100/1h' });
  const expires = h('input', { type: 'datetime-local', id: 'edit-expires' });
  const meta = h('textarea', { id: 'edit-meta', rows: '4', spellcheck: 'false', autocapitalize: 'off', placeholder: '{"customer": "cus_123"}' });
  const ips = h('input', { type: 'text', id: 'edit-ips', autocomplete: 'off', spellcheck: 'false', placeholder: '192.0.2.0/24, 2001:db8::/32' });
  const credits = h('input', { type: 'number', id: 'edit-credits', min: '0', step: '1', inputmode: 'numeric', placeholder: 'No usage limit' });
  const refill = select('edit-refill', [['', 'Never refilled'], ['daily', 'Refilled daily'], ['monthly', 'Refilled monthly']], '');
  const amount = h('input', { type: 'number', id: 'edit-refill-amount', min: '1', step: '1', inputmode: 'numeric' });
  const day = h('input', { type: 'number', id: 'edit-refill-day', min: '1', max: '31', step: '1', inputmode: 'numeric', placeholder: '1' });
  const amountField = field('Refill to', amount, 'Requests, at 00:00 UTC.');
  const dayField = field('Day of the month', day, '1 to 31; past a month’s end, its last day.');
  const editErr = errorBox();
  const saved = h('p', { class: 'hint', id: 'edit-status', role: 'status' });
  const save = h('button', { type: 'submit', class: 'primary', id: 'edit-save' }, 'Save changes');
  const form = h('form', { id: 'key-edit', class: 'grid-form', novalidate: true },
    field('Name', name),
    field('Scopes', scopes, 'Separated by commas or spaces. Empty: no scopes; * grants all.'),
    field('Rate limits', limits, 'Requests per window, e.g. 5/1m, 100/1h. Empty: the server default.'),
    field('Expires', expires, 'In your local time. Empty: never.'),
    field('Allowed IPs', ips, 'CIDRs or addresses, separated by commas or spaces. Empty: any address.'),
    field('Credits', credits, 'Requests left; saving sets them anew. Empty: no usage limit.'),
    field('Refill', refill), amountField, dayField,
    h('div', { class: 'form-wide' }, field('Meta', meta, 'A JSON object of at most 4 KiB, for your own use; answered by verify and whoami. Empty: none.')),
    h('div', { class: 'form-end' }, editErr, h('div', { class: 'form-actions' }, save, saved)));
  const editNote = h('p', { class: 'hint', hidden: true }, 'A revoked key cannot be edited.');
  const loadErr = errorBox();
  const body = h('div', { class: 'key-body', hidden: true },
    h('div', { class: 'key-grid' },
      h('section', { class: 'card', 'aria-labelledby': 'key-record-h' }, h('h3', { id: 'key-record-h' }, 'Record'), record),
      h('section', { class: 'card', 'aria-labelledby': 'key-edit-h' }, h('h3', { id: 'key-edit-h' }, 'Edit'), editNote, form)));

  view.append(
    h('p', { class: 'crumb' }, h('a', { href: `#/orgs/${encodeURIComponent(org.id)}/keys`, id: 'key-back' }, 'API keys'), ' /'),
    slot,
    h('div', { class: 'section-head key-head' }, title, badges, actions),
    actionErr, rolledNote, loadErr, body);

  function showRefill() {
    amountField.hidden = !refill.value;
    dayField.hidden = refill.value !== 'monthly';
  }

  function fill(k) {
    name.value = k.name;
    scopes.value = k.scopes.join(', ');
    limits.value = limitsText(k.rate_limits);
    expires.value = localInput(k.expires_at);
    meta.value = k.meta ? JSON.stringify(k.meta, null, 2) : '';
    ips.value = k.allowed_ips.join(', ');
    credits.value = k.credits ? String(k.credits.remaining) : '';
    refill.value = k.credits?.refill?.interval || '';
    amount.value = k.credits?.refill ? String(k.credits.refill.amount) : '';
    day.value = k.credits?.refill?.day ? String(k.credits.refill.day) : '';
    showRefill();
    initial = read();
  }

  // read is the form as a PATCH body of every field.
  function read() {
    let m = null;
    if (meta.value.trim()) {
      try {
        m = JSON.parse(meta.value);
      } catch (e) {
        throw { message: `Meta is not valid JSON: ${e.message}` };
      }
    }
    let c = null;
    if (credits.value.trim() || refill.value) {
      c = { remaining: credits.value.trim() === '' ? null : Number(credits.value) };
      if (refill.value) {
        c.refill = { amount: Number(amount.value), interval: refill.value };
        if (refill.value === 'monthly' && day.value.trim()) c.refill.day = Number(day.value);
      }
    }
    return {
      name: name.value,
      scopes: words(scopes.value),
      rate_limits: limits.value.trim() ? parseLimits(limits.value) : null,
      expires_at: expires.value ? new Date(expires.value).toISOString() : null,
      meta: m,
      allowed_ips: ips.value.trim() ? words(ips.value) : null,
      credits: c,
    };
  }

  function row(label, fieldName, value) {
    return [h('dt', null, label), h('dd', { 'data-field': fieldName }, value)];
  }

  // showRecord shows k in the head and the record; show also fills the form.
  function showRecord(k) {
    key = k;
    const st = status(k);
    const revoked = st === 'revoked';
    title.textContent = k.name;
    badges.replaceChildren(h('code', { class: 'prefix' }, k.prefix), h('span', { class: 'env ' + k.env }, k.env), statusBadge(k, st));
    toggle.textContent = k.enabled ? 'Disable' : 'Enable';
    toggle.classList.toggle('danger', k.enabled);
    toggle.hidden = revoked;
    roll.hidden = st !== 'active';
    revoke.hidden = revoked;
    actions.hidden = false;
    record.replaceChildren(
      ...row('ID', 'id', h('code', null, k.id)),
      ...row('Prefix', 'prefix', h('code', { class: 'prefix' }, k.prefix)),
      ...row('Environment', 'env', h('span', { class: 'env ' + k.env }, k.env)),
      ...row('Status', 'status', statusBadge(k, st)),
      ...row('Enabled', 'enabled', k.enabled ? 'yes' : 'no: refused with 401 key_disabled'),
      ...row('Scopes', 'scopes', codes(k.scopes, 'none')),
      ...row('Rate limits', 'rate_limits', limitsText(k.rate_limits)),
      ...row('Allowed IPs', 'allowed_ips', codes(k.allowed_ips, 'any address')),
      ...row('Credits', 'credits', creditsText(k.credits)),
      ...row('Meta', 'meta', k.meta ? h('pre', { class: 'json' }, JSON.stringify(k.meta, null, 2)) : muted('none')),
      ...row('Expires', 'expires_at', k.expires_at ? dateAndAgo(k.expires_at) : muted('never')),
      ...row('Last used', 'last_used_at', k.last_used_at ? dateAndAgo(k.last_used_at) : muted('never')),
      ...row('Created', 'created_at', dateAndAgo(k.created_at)),
      ...row('Revoked', 'revoked_at', revoked ? dateAndAgo(k.revoked_at) : muted('no')));
    form.hidden = revoked;
    editNote.hidden = !revoked;
    body.hidden = false;
  }

  function show(k) {
    showRecord(k);
    fill(k);
  }

  // sections adds the key's own usage chart and log, once its env is known.
  function sections(k) {
    const [usage, stopUsage] = usageSection(path('orgs', org.id, 'usage') + '?' + new URLSearchParams({ hours: 48, key_id: k.id }),
      [k.env], 'This key’s requests per hour over the last 48 hours, by status class, in your local time.');
    const [log, stopLog] = logSection(org, params, k);
    stops.push(stopUsage, stopLog);
    body.append(usage, log);
  }

  let seq = 0; // an answer older than the one shown is dropped

  // load reads the key again and shows it; with keepForm, what is typed in
  // the form stays.
  async function load(keepForm) {
    const mine = ++seq;
    try {
      const k = await api('GET', url);
      if (stopped || mine !== seq) return;
      hideError(loadErr);
      if (!key) sections(k);
      if (keepForm === true && key) showRecord(k);
      else show(k);
    } catch (e) {
      if (!stopped && mine === seq) showError(loadErr, e);
    }
  }

  // edited shows a PATCH's answer, newer than any read before it.
  function edited(k) {
    seq++;
    show(k);
  }

  // act runs an action of the head's buttons, its error next to them.
  const act = (button, f) => () => {
    hideError(actionErr);
    busy(button, async () => {
      try {
        await f();
      } catch (e) {
        showError(actionErr, e);
      }
    });
  };

  toggle.addEventListener('click', act(toggle, async () => {
    edited(await api('PATCH', url, { enabled: !key.enabled }));
    toggle.focus();
  }));
  roll.addEventListener('click', () => rollKey(org, key, slot, async (fresh) => {
    rolledNote.replaceChildren('Rolled: the new key is ', h('a', { href: keyHref(org, fresh), id: 'key-rolled-link' }, fresh.name, ' ', h('code', null, fresh.prefix)), '.');
    rolledNote.hidden = false;
    await load();
  }));
  revoke.addEventListener('click', () => revokeKey(org, key, async () => {
    await load();
    title.focus();
  }));
  refill.addEventListener('change', showRefill);

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    hideError(editErr);
    saved.textContent = '';
    busy(save, async () => {
      try {
        const now = read();
        const patch = Object.fromEntries(Object.entries(now).filter(([f, v]) => JSON.stringify(v) !== JSON.stringify(initial[f])));
        if (!Object.keys(patch).length) {
          saved.textContent = 'Nothing changed.';
          return;
        }
        edited(await api('PATCH', url, patch));
        saved.textContent = `Saved: ${Object.keys(patch).join(', ')}.`;
      } catch (e) {
        showError(editErr, e);
      }
    });
  });

  load();
  const tick = setInterval(() => refreshTimes(view), 20000);
  const reread = setInterval(() => document.hidden || load(true), EVERY); // last use, credits left
  return () => {
    stopped = true;
    clearInterval(tick);
    clearInterval(reread);
    for (const f of stops) f();
  };
}
