// tenfold frontend: show which backend instance answers the API (through the load balancer).
"use strict";
(async () => {
  const target = document.getElementById("api");
  try {
    const response = await fetch("/api/whoami", { credentials: "same-origin" });
    const data = await response.json();
    target.textContent = `${data.instance} (pool ${data.pool})`;
  } catch (error) {
    target.textContent = `unavailable (${error})`;
  }
})();
