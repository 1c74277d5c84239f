// Release dashboard: keeps the page current and sends actions with the user's identity token.
// The page works without this script (forms post with a pasted token, a link refreshes).
(function () {
  "use strict";
  var TOKEN_KEY = "releasectl-identity-token";
  var REFRESH_MS = 2000;
  var body = document.body;
  var result = document.getElementById("action-result");

  // Tokens by the kind of action they are for: locally each function accepts only a token minted
  // for it ("rollback", "approve"); a pasted token (e.g. from gcloud) is used for every kind ("*").
  function tokens() {
    try { return JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "{}") || {}; } catch (e) { return {}; }
  }
  function token(kind) { var all = tokens(); return all[kind] || all["*"] || ""; }
  function anyToken() { var all = tokens(); var kinds = Object.keys(all); return kinds.length ? all[kinds[0]] : ""; }
  function keep(all) { sessionStorage.setItem(TOKEN_KEY, JSON.stringify(all)); }

  function identityOf(value) {
    // For display only: the functions verify the token; the page never trusts it.
    try {
      var part = value.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part)).email || "an unknown identity";
    } catch (e) { return "an unreadable token"; }
  }

  function showIdentity() {
    var status = document.getElementById("identity-status");
    var value = anyToken();
    body.classList.toggle("has-token", value !== "");
    if (status) {
      status.textContent = value ? "Acting as " + identityOf(value) + "." : status.getAttribute("data-signed-out");
    }
    var signOut = document.getElementById("sign-out");
    if (signOut) { signOut.hidden = !value; }
  }

  function say(text, isError) {
    result.textContent = text;
    result.classList.toggle("error", !!isError);
  }

  var localSignIn = document.getElementById("local-sign-in");
  if (localSignIn) {
    localSignIn.addEventListener("submit", function (event) {
      event.preventDefault();
      var email = localSignIn.elements.namedItem("local_token_for").value;
      fetch("?local_token_for=" + encodeURIComponent(email), { headers: { Accept: "application/json" } })
        .then(function (response) { return response.json().then(function (answer) { return [response, answer]; }); })
        .then(function (pair) {
          if (!pair[0].ok) { throw new Error(pair[1].error || "HTTP " + pair[0].status); }
          keep(pair[1].tokens);
          showIdentity();
        })
        .catch(function (error) { say("Could not get a local token: " + error.message, true); });
    });
  }

  var tokenForm = document.getElementById("token-form");
  if (tokenForm) {
    tokenForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var field = document.getElementById("identity-token");
      keep({ "*": field.value.trim() });
      field.value = "";
      showIdentity();
    });
  }

  var signOut = document.getElementById("sign-out");
  if (signOut) {
    signOut.addEventListener("click", function () { sessionStorage.removeItem(TOKEN_KEY); showIdentity(); });
  }

  // Actions: the same POST as without JavaScript, with the token in the Authorization header.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.classList || !form.classList.contains("action")) { return; }
    var value = token(form.getAttribute("data-kind"));
    if (!value) { return; } // no stored token: the form posts with the token pasted in it
    event.preventDefault();
    var data = new FormData(form);
    if (event.submitter && event.submitter.name) { data.set(event.submitter.name, event.submitter.value); }
    data.delete("token");
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.getAttribute("action") || "", {
      method: "POST",
      headers: { Accept: "application/json", Authorization: "Bearer " + value },
      body: new URLSearchParams(data)
    })
      .then(function (response) { return response.json().then(function (answer) { return [response, answer]; }); })
      .then(function (pair) {
        say(pair[1].message, !pair[0].ok);
        // Focus moves to the outcome (read out, and the form's part may now refresh).
        result.focus();
        refresh();
      })
      .catch(function (error) { say("The action could not be sent: " + error.message, true); })
      .finally(function () { buttons.forEach(function (b) { b.disabled = false; }); });
  });

  // Live updates: fetch the page again and swap each refreshable part the user is not working in.
  var refreshing = false;
  function refresh() {
    if (refreshing || document.hidden) { return; }
    refreshing = true;
    fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        fresh.querySelectorAll("[data-refresh]").forEach(function (part) {
          var current = document.getElementById(part.id);
          if (!current || current.contains(document.activeElement)) { return; }
          current.replaceWith(document.importNode(part, true));
        });
        var stamp = fresh.getElementById("updated");
        if (stamp) { document.getElementById("updated").replaceWith(document.importNode(stamp, true)); }
      })
      .catch(function () { /* transient: the next tick tries again */ })
      .finally(function () { refreshing = false; });
  }

  showIdentity();
  setInterval(refresh, REFRESH_MS);
})();
