// Chartgate review console: the one script. Counts down "expires in" once a second. Everything
// works without it (the server renders the time left when the page loads).
"use strict";
(function () {
  function format(s) {
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }
  function start() {
    var nodes = document.querySelectorAll("[data-expires-in]");
    if (!nodes.length) return;
    var loaded = Date.now();
    var initial = Array.prototype.map.call(nodes, function (n) {
      return parseInt(n.getAttribute("data-expires-in"), 10) || 0;
    });
    setInterval(function () {
      var elapsed = Math.floor((Date.now() - loaded) / 1000);
      Array.prototype.forEach.call(nodes, function (n, i) {
        var left = initial[i] - elapsed;
        n.textContent = left > 0 ? format(left) : "expired (reload)";
      });
    }, 1000);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
