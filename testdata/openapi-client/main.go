// Command openapi-client calls a running keyhole through the Go client that
// oapi-codegen generates from keyhole's openapi.json into client.gen.go,
// which is not kept: TestOpenAPIGeneratedClient generates it, builds this
// program and runs it against a real keyhole process. It creates an
// organization, finds it in the listing, creates a live key there and
// verifies it, and prints what it saw as one JSON object.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
)

func main() {
	if err := run(os.Getenv("KEYHOLE_SERVER"), os.Getenv("KEYHOLE_ADMIN_TOKEN")); err != nil {
		fmt.Fprintln(os.Stderr, "openapi-client:", err)
		os.Exit(1)
	}
}

func run(server, token string) error {
	admin := WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
		if req.URL.Path != "/v1/keys/verify" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return nil
	})
	c, err := NewClientWithResponses(server, admin)
	if err != nil {
		return err
	}
	ctx := context.Background()

	created, err := c.CreateOrgWithResponse(ctx, CreateOrgJSONRequestBody{Name: "made by the generated client"})
	if err != nil {
		return fmt.Errorf("createOrg: %w", err)
	}
	if created.JSON201 == nil {
		return fmt.Errorf("createOrg = %d %s", created.StatusCode(), created.Body)
	}
	org := created.JSON201

	listed, err := c.ListOrgsWithResponse(ctx)
	if err != nil {
		return fmt.Errorf("listOrgs: %w", err)
	}
	if listed.JSON200 == nil {
		return fmt.Errorf("listOrgs = %d %s", listed.StatusCode(), listed.Body)
	}
	found := false
	for _, o := range listed.JSON200.Orgs {
		found = found || o.Id == org.Id && o.Name == org.Name
	}

	scopes := []string{"sms:send"}
	made, err := c.CreateKeyWithResponse(ctx, org.Id, CreateKeyJSONRequestBody{Name: "backend", Env: EnvLive, Scopes: &scopes})
	if err != nil {
		return fmt.Errorf("createKey: %w", err)
	}
	if made.JSON201 == nil {
		return fmt.Errorf("createKey = %d %s", made.StatusCode(), made.Body)
	}

	env, scope := VerifyRequestEnvLive, "sms:send"
	verified, err := c.VerifyKeyWithResponse(ctx, VerifyKeyJSONRequestBody{Key: made.JSON201.Key, Env: &env, Scope: &scope})
	if err != nil {
		return fmt.Errorf("verifyKey: %w", err)
	}
	if verified.JSON200 == nil {
		return fmt.Errorf("verifyKey = %d %s", verified.StatusCode(), verified.Body)
	}
	valid, err := verified.JSON200.AsVerifyValid()
	if err != nil {
		return fmt.Errorf("verifyKey's answer: %w", err)
	}

	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"org_id":          org.Id,
		"listed":          found,
		"key_id":          made.JSON201.Id,
		"key_prefix":      made.JSON201.Prefix,
		"valid":           valid.Valid,
		"verified_key_id": valid.KeyId,
		"remaining":       valid.Ratelimit.Remaining,
		"request_id":      verified.HTTPResponse.Header.Get("X-Request-Id"),
	})
}
