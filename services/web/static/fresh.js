// Whistle pages: never the page as it was, when Back or Forward brings one back.
// A browser may keep a page whole in its back/forward cache (Chromium does, even with
// Cache-Control: no-store) and show it again as it was: a rating or a 报到 already sent
// shown as a form still to send, which could be sent twice or mislead. Such a page is
// fetched afresh instead: its own address, or, for a page that answered a form (its
// address is the form's, no page to fetch), the page the form was on (data-reload).
(function () {
  "use strict";
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    var to = document.body.getAttribute("data-reload");
    if (!to) return;
    window.location.replace(to === "self" ? window.location.href : to);
  });
})();
