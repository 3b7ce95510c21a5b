/* SafeRun decision-link page: keep the page true while it is open. The page has no session (the link is
   its own credential), so instead of the dashboard's event stream it polls the link's status every few
   seconds; once the request is decided elsewhere (or timed out) the status replaces the buttons, and the
   polling stops. Nothing here decides or spends the link. */
(function () {
  "use strict";
  var region = document.getElementById("link-live");
  if (!region) return;
  var url = region.getAttribute("data-link-status");
  var every = parseInt(region.getAttribute("data-every"), 10) || 3000;
  var timer = null;

  function closed(html) {
    region.innerHTML = html;
    var form = document.querySelector(".decision-form");
    if (form) form.parentNode.removeChild(form);
    if (timer) { clearInterval(timer); timer = null; }
  }

  function check() {
    if (document.hidden) return;
    fetch(url, { credentials: "omit", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html && html.indexOf('data-closed="1"') !== -1) closed(html);
      })
      .catch(function () { /* the next tick tries again */ });
  }

  timer = setInterval(check, every);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) check(); });
})();
