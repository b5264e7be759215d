// The admin API, called with the admin token of this tab. The token lives in
// sessionStorage only: never in the URL, localStorage or the console.

const TOKEN = 'keyhole.token';

export const getToken = () => sessionStorage.getItem(TOKEN);
export const setToken = (token) => sessionStorage.setItem(TOKEN, token);
export const clearSession = () => sessionStorage.clear();

// ApiError carries the contract's error body: code, message, request_id.
export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId || '';
  }
}

let sessionEnded = () => {};

// onSessionEnd sets what happens when the server refuses the stored token.
export function onSessionEnd(f) {
  sessionEnded = f;
}

// endSession ends the session as a refused token does, saying why: for a
// page that has just revoked the token it is signed in with.
export const endSession = (err) => sessionEnded(err);

// api calls /admin/v1 + path and answers the decoded JSON, or throws an ApiError.
export async function api(method, path, body, token = getToken()) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  const init = { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch('/admin/v1' + path, init);
  } catch {
    throw new ApiError(0, 'network_error', 'Could not reach the keyhole server. Check that it is running, then try again.');
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    // not JSON: described below
  }
  if (res.ok) return data;
  const e = (data && data.error) || {};
  const err = new ApiError(res.status, e.code || 'http_' + res.status,
    e.message || `The server answered ${res.status} ${res.statusText}.`, data && data.request_id);
  if (res.status === 401 && token && token === getToken()) sessionEnded(err);
  throw err;
}

// path builds an API path from segments, each one escaped.
export const path = (...parts) => '/' + parts.map(encodeURIComponent).join('/');

// pager reads a newest-first list page by page with its cursor: get(before)
// answers the page of query(before), or null when reset() was called
// meanwhile (the filters changed), so a late answer to an old query never
// lands in the table.
export function pager(query) {
  let gen = 0;
  return {
    reset() {
      gen++;
    },
    async get(before) {
      const mine = gen;
      try {
        const page = await api('GET', query(before));
        return mine === gen ? page : null;
      } catch (e) {
        if (mine === gen) throw e;
        return null;
      }
    },
  };
}
