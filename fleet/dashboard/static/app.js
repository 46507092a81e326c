// fleet dashboard: live updates over server-sent events, and confirmed actions.
// The server pushes a small "changed" notice (which topics); the page then fetches
// its one view again as an HTML fragment and swaps it in: no reload, no polling.
"use strict";
(() => {
  const live = document.getElementById("live");
  if (!live) return; // the sign-in page
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const topics = (document.body.dataset.topics || "").split(" ");
  const flashBox = document.getElementById("flash");
  let fetching = false;
  let again = false;

  function signin() {
    location.assign("/signin?expired=1");
  }

  function flash(text, ok) {
    flashBox.hidden = false;
    flashBox.textContent = text;
    flashBox.className = ok ? "ok" : "error";
  }

  async function refresh() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      const answer = await fetch(location.pathname + location.search, {
        headers: { "X-Fleet-Fragment": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (answer.status === 401) return signin();
      live.innerHTML = await answer.text();
      live.dataset.refreshed = String(Number(live.dataset.refreshed || "0") + 1);
    } catch (error) {
      // The server is away: the event stream reconnects, and this runs again then.
    } finally {
      fetching = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  let delay = 2000; // doubled after each closed stream (e.g. 429: too many open pages)

  function listen() {
    const source = new EventSource("/live");
    source.addEventListener("open", () => { delay = 2000; });
    source.addEventListener("changed", (event) => {
      const changed = JSON.parse(event.data).topics || [];
      if (changed.some((topic) => topics.includes(topic))) refresh();
    });
    source.addEventListener("signin", () => {
      source.close();
      signin();
    });
    source.addEventListener("error", () => {
      // Closed for good (e.g. 401: the session ended): find out by fetching the view.
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(() => { refresh(); listen(); }, delay);
        delay = Math.min(delay * 2, 60000);
      }
    });
  }
  listen();

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    event.preventDefault();
    const body = {};
    if (button.dataset.input) {
      const value = document.querySelector(button.dataset.input).value;
      body.replicas = Number(value);
      if (!Number.isInteger(body.replicas) || body.replicas < 0) {
        flash("replicas must be a whole number, 0 or more", false);
        return;
      }
    }
    const question = (button.dataset.confirm || "Are you sure?").replace("{n}", body.replicas);
    if (!window.confirm(question)) return;
    button.disabled = true;
    try {
      const answer = await fetch(button.dataset.action, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
      if (answer.status === 401) return signin();
      const said = await answer.json().catch(() => ({ error: answer.statusText }));
      flash(said.message || said.error || String(answer.status), answer.ok);
      refresh();
    } finally {
      button.disabled = false;
    }
  });

  const filters = document.getElementById("filters");
  if (filters) {
    filters.addEventListener("change", () => {
      const query = new URLSearchParams(new FormData(filters));
      for (const [key, value] of [...query]) if (!value) query.delete(key);
      const search = query.toString();
      history.replaceState(null, "", location.pathname + (search ? "?" + search : ""));
      refresh();
    });
  }
})();
