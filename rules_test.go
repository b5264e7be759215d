package main

import "testing"

func TestRulesMatch(t *testing.T) {
	rules, err := parseRules([]byte(`[{"method":"POST","path":"/api/v1/*/sms/send","scope":"sms:send"},
		{"method":"GET","path":"/api/v1/*/reports","scope":"reports:read"},
		{"method":"*","path":"/api/v1/*/admin/*","scope":"admin"}]`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ method, path, want string }{
		{"POST", "/api/v1/prod/sms/send", "sms:send"},
		{"GET", "/api/v1/prod/sms/send", ""},
		{"POST", "/api/v1/prod/sms/send/x", ""},
		{"POST", "/api/v1//sms/send", ""},
		{"GET", "/api/v1/dev/reports", "reports:read"},
		{"HEAD", "/api/v1/dev/reports", "reports:read"},
		{"DELETE", "/api/v1/dev/admin/users/1", "admin"},
		{"GET", "/api/v1/dev/other", ""},
		// Every spelling a common router serves as the same route.
		{"POST", "/api/v1/prod/SMS/Send", "sms:send"},
		{"POST", "/api/v1/prod/sms/send/", "sms:send"},
		{"post", "/api/v1/prod/sms/send", ""}, // methods are upper-cased by the caller
		{"GET", "/API/V1/DEV/Reports/", "reports:read"},
		{"GET", "/api/v1/dev/admin", "admin"},
		{"GET", "/api/v1/dev/admin/", "admin"},
		{"GET", "/api/v1/dev/ADMIN/x/y", "admin"},
		{"GET", "/api/v1/dev/administrator", ""},
		{"GET", "/api/v1/dev", ""},
	}
	for _, tt := range tests {
		if got := requiredScope(rules, tt.method, tt.path); got != tt.want {
			t.Errorf("requiredScope(%s %s) = %q; want %q", tt.method, tt.path, got, tt.want)
		}
	}
}
