#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "json/json.h"
#include "lever/lever.h"
#include "core/error.h"

#include <string.h>

static lb_http_response resp(int status, const char *body)
{
    lb_http_response r = {.status = status, .body = body, .body_len = strlen(body)};
    return r;
}

static void classify(void **state)
{
    (void)state;
    int cases[][2] = {{200, LB_LEVER_OK},        {201, LB_LEVER_OK},        {204, LB_LEVER_OK},
                      {0, LB_LEVER_RETRY},       {500, LB_LEVER_RETRY},     {503, LB_LEVER_RETRY},
                      {408, LB_LEVER_RETRY},     {429, LB_LEVER_RETRY},     {401, LB_LEVER_REAUTH},
                      {403, LB_LEVER_FORBIDDEN}, {404, LB_LEVER_NOT_FOUND}, {400, LB_LEVER_FAILED},
                      {422, LB_LEVER_FAILED},    {301, LB_LEVER_FAILED}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        lb_http_response r = resp(cases[i][0], "");
        assert_int_equal(lb_lever_classify(&r), cases[i][1]);
    }
    /* No CA bundle or a certificate that does not verify: the same every
     * time, so not a retry, and the words say what to fix. */
    lb_http_response tls = {.status = 0,
                            .error = 60,
                            .tls_setup = 1,
                            .body = "",
                            .error_text = "SSL certificate problem: self-signed certificate"};
    assert_int_equal(lb_lever_classify(&tls), LB_LEVER_FAILED);
    char buf[256];
    lb_lever_describe(&tls, buf, sizeof(buf));
    assert_non_null(strstr(buf, "TLS setup failed: SSL certificate problem"));
    assert_non_null(strstr(buf, "ca-certificates"));
}

static void describe(void **state)
{
    (void)state;
    char buf[256];
    lb_http_response r = resp(403, "{\"code\":\"Forbidden\",\"message\":\"Ask a Super Admin\"}");
    lb_lever_describe(&r, buf, sizeof(buf));
    assert_string_equal(buf, "Lever answered 403: Ask a Super Admin");
    r = resp(502, "<html>bad gateway</html>");
    lb_lever_describe(&r, buf, sizeof(buf));
    assert_string_equal(buf, "Lever answered 502");
    r = resp(0, "");
    r.error_text = "Connection refused";
    lb_lever_describe(&r, buf, sizeof(buf));
    assert_string_equal(buf, "Lever unreachable: Connection refused");
}

static void requests(void **state)
{
    (void)state;
    lb_lever_auth key = {.api_url = "http://127.0.0.1:9/v1", .api_key = "k3y"};
    lb_lever_req r;
    lb_lever_req_init(&r, &key, "GET", "expand=applications", "/opportunities/%s", "a b/c");
    assert_string_equal(r.http.url,
                        "http://127.0.0.1:9/v1/opportunities/a%20b%2Fc?expand=applications");
    assert_string_equal(r.http.userpwd, "k3y:");
    assert_null(r.http.headers[0]);
    lb_lever_req_free(&r);

    lb_lever_auth bearer = {.api_url = "http://x/v1", .access_token = "tok"};
    lb_lever_req_init(&r, &bearer, "POST", NULL, "/opportunities/%s/notes", "opp1");
    yajl_gen g = lb_json_gen_new();
    lb_lever_note_body(g, "Assessment \"js\" sent", 0);
    lb_lever_req_json(&r, g);
    yajl_gen_free(g);
    assert_null(r.http.userpwd);
    assert_string_equal(r.http.headers[0], "Authorization: Bearer tok");
    assert_string_equal(r.http.headers[1], "Content-Type: application/json");
    assert_null(r.http.headers[2]);
    assert_string_equal(r.http.body, "{\"value\":\"Assessment \\\"js\\\" sent\"}");
    lb_lever_req_free(&r);
}

static void bodies(void **state)
{
    (void)state;
    yajl_gen g = lb_json_gen_new();
    const char *tags[] = {"assessment:sent", "x"};
    lb_lever_tags_body(g, tags, 2);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    assert_string_equal((const char *)buf, "{\"tags\":[\"assessment:sent\",\"x\"]}");
    yajl_gen_free(g);
    g = lb_json_gen_new();
    lb_lever_note_update_body(g, "done");
    yajl_gen_get_buf(g, &buf, &len);
    assert_string_equal((const char *)buf, "{\"values\":[{\"value\":\"done\"}]}");
    yajl_gen_free(g);
}

static void opportunity(void **state)
{
    (void)state;
    const char *body = "{\"data\":{\"id\":\"o1\",\"name\":\"Ada Lovelace\","
                       "\"emails\":[\"ada@example.com\",\"b@x\"],\"stage\":{\"id\":\"s1\"},"
                       "\"contact\":\"c1\",\"applications\":[{\"id\":\"a1\",\"posting\":\"p1\"},"
                       "{\"id\":\"a2\",\"posting\":{\"id\":\"p2\"}},\"a3\"],\"extra\":[1,2]}}";
    lb_lever_opportunity o;
    assert_int_equal(lb_lever_parse_opportunity(body, strlen(body), &o), 0);
    assert_string_equal(o.id, "o1");
    assert_string_equal(o.name, "Ada Lovelace");
    assert_string_equal(o.email, "ada@example.com");
    assert_string_equal(o.stage_id, "s1");
    assert_string_equal(o.candidate_id, "c1");
    assert_int_equal(o.npostings, 2);
    assert_string_equal(o.postings[0], "p1");
    assert_string_equal(o.postings[1], "p2");
    assert_int_equal(o.archived, 0);
    lb_lever_opportunity_free(&o);
    const char *archived = "{\"data\":{\"id\":\"o3\",\"archived\":{\"archivedAt\":1,"
                           "\"reason\":\"r1\"}}}";
    assert_int_equal(lb_lever_parse_opportunity(archived, strlen(archived), &o), 0);
    assert_int_equal(o.archived, 1);
    lb_lever_opportunity_free(&o);
    const char *sparse = "{\"data\":{\"id\":\"o2\",\"archived\":null}}";
    assert_int_equal(lb_lever_parse_opportunity(sparse, strlen(sparse), &o), 0);
    assert_int_equal(o.archived, 0);
    assert_null(o.name);
    assert_null(o.email);
    lb_lever_opportunity_free(&o);
    assert_int_not_equal(lb_lever_parse_opportunity("{}", 2, &o), 0);
    assert_int_not_equal(lb_lever_parse_opportunity("nope", 4, &o), 0);
}

static void pages(void **state)
{
    (void)state;
    const char *body = "{\"data\":[{\"id\":\"s1\",\"text\":\"Phone screen\"},{\"id\":\"s2\"}],"
                       "\"hasNext\":true,\"next\":\"abc\"}";
    lb_lever_page p;
    assert_int_equal(lb_lever_parse_page(body, strlen(body), &p), 0);
    assert_int_equal(p.count, 2);
    assert_string_equal(p.items[0].text, "Phone screen");
    assert_string_equal(p.next, "abc");
    lb_lever_page_free(&p);
    const char *last = "{\"data\":[],\"next\":\"zzz\"}"; /* no hasNext: the end */
    assert_int_equal(lb_lever_parse_page(last, strlen(last), &p), 0);
    assert_null(p.next);
    lb_lever_page_free(&p);
    const char *bare = "[{\"text\":\"tag\",\"count\":3}]";
    assert_int_equal(lb_lever_parse_page(bare, strlen(bare), &p), 0);
    assert_int_equal(p.count, 1);
    lb_lever_page_free(&p);
    assert_int_not_equal(lb_lever_parse_page("{\"data\":5}", 10, &p), 0);
}

static void webhook_created(void **state)
{
    (void)state;
    const char *flat = "{\"data\":{\"id\":\"w1\",\"url\":\"u\",\"configuration\":"
                       "{\"signatureToken\":\"tok1\"}}}";
    const char *nested = "{\"data\":{\"data\":{\"id\":\"w2\",\"configuration\":"
                         "{\"signatureToken\":\"tok2\"}}}}";
    char *id, *tok;
    assert_int_equal(lb_lever_parse_webhook(flat, strlen(flat), &id, &tok), 0);
    assert_string_equal(id, "w1");
    assert_string_equal(tok, "tok1");
    lb_free(id);
    lb_free(tok);
    assert_int_equal(lb_lever_parse_webhook(nested, strlen(nested), &id, &tok), 0);
    assert_string_equal(id, "w2");
    assert_string_equal(tok, "tok2");
    lb_free(id);
    lb_free(tok);
    const char *notoken = "{\"data\":{\"id\":\"w3\"}}";
    assert_int_not_equal(lb_lever_parse_webhook(notoken, strlen(notoken), &id, &tok), 0);
    assert_null(id);
    const char *note = "{\"data\":{\"noteId\":\"n1\"}}";
    assert_int_equal(lb_lever_parse_note_id(note, strlen(note), &id), 0);
    assert_string_equal(id, "n1");
    lb_free(id);
}

static void opp_pages(void **state)
{
    (void)state;
    const char *body =
        "{\"data\":[{\"id\":\"o1\",\"contact\":\"c1\",\"stage\":{\"id\":\"s3\"},\"archived\":null,"
        "\"stageChanges\":[{\"toStageId\":\"s1\",\"updatedAt\":100},"
        "{\"toStageId\":\"s2\",\"updatedAt\":200},{\"toStageId\":\"s3\",\"updatedAt\":300}]},"
        "{\"id\":\"o2\",\"stage\":\"s1\",\"archived\":{\"archivedAt\":5},\"stageChanges\":[]},"
        "{\"name\":\"no id\"}],\"hasNext\":true,\"next\":\"%5B1%5D\"}";
    lb_lever_opp_page p;
    assert_int_equal(lb_lever_parse_opp_page(body, strlen(body), 150, &p), 0);
    assert_int_equal(p.count, 2);
    assert_string_equal(p.items[0].id, "o1");
    assert_string_equal(p.items[0].candidate_id, "c1");
    assert_string_equal(p.items[0].stage_id, "s3");
    assert_false(p.items[0].archived);
    /* only the changes at or after 150, each with the stage it left */
    assert_int_equal(p.items[0].nchanges, 2);
    assert_string_equal(p.items[0].changes[0].to_stage, "s2");
    assert_string_equal(p.items[0].changes[0].from_stage, "s1");
    assert_int_equal(p.items[0].changes[0].at, 200);
    assert_string_equal(p.items[0].changes[1].to_stage, "s3");
    assert_string_equal(p.items[0].changes[1].from_stage, "s2");
    assert_true(p.items[1].archived);
    assert_int_equal(p.items[1].nchanges, 0);
    assert_string_equal(p.next, "%5B1%5D");
    lb_lever_opp_page_free(&p);
    assert_int_equal(lb_lever_parse_opp_page("{\"data\":3}", 10, 0, &p), LB_EPARSE);
    /* offsets: Lever's own pass unchanged, anything else percent-encoded */
    char q[64] = "limit=100";
    assert_int_equal(lb_lever_offset_query(q, sizeof(q), "%5B1%5D"), 0);
    assert_string_equal(q, "limit=100&offset=%5B1%5D");
    char q2[64] = "";
    assert_int_equal(lb_lever_offset_query(q2, sizeof(q2), "a b&c"), 0);
    assert_string_equal(q2, "offset=a%20b%26c");
    char q3[12] = "limit=100";
    assert_int_equal(lb_lever_offset_query(q3, sizeof(q3), "xyz"), LB_ETOOBIG);
    assert_string_equal(q3, "limit=100"); /* left as it was */
    /* filters: every value percent-encoded, a '%' too */
    char q4[64] = "limit=100";
    assert_int_equal(lb_lever_query_add(q4, sizeof(q4), "stage_id", "a%5B/b"), 0);
    assert_string_equal(q4, "limit=100&stage_id=a%255B%2Fb");
    char q5[24] = "limit=100";
    assert_int_equal(lb_lever_query_add(q5, sizeof(q5), "posting_id", "%%%%"), LB_ETOOBIG);
    assert_string_equal(q5, "limit=100");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classify),  cmocka_unit_test(describe),        cmocka_unit_test(requests),
        cmocka_unit_test(bodies),    cmocka_unit_test(opportunity),     cmocka_unit_test(pages),
        cmocka_unit_test(opp_pages), cmocka_unit_test(webhook_created),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
