// Starts the app. An external module rather than trunk's inline script, so the
// Content-Security-Policy needs no 'unsafe-inline'.
import init from "./brivl-app.js";

init();
