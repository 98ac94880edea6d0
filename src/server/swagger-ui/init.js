// aft-serve: starts Swagger UI on this server's OpenAPI document (no request leaves the server).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
  displayRequestDuration: true,
  defaultModelsExpandDepth: 1,
});
