/* A fixed P-521 exchange key (test data only, generated with
 * `jose jwk gen -i '{"alg":"ECMR"}'`) and its RFC 7638 thumbprints,
 * computed with Python's hashlib over the canonical JSON and checked with
 * `jose jwk thp -a HASH`. */
#pragma once

#define KAT_JWK                                                                                     \
        "{\"alg\":\"ECMR\",\"crv\":\"P-521\","                                                      \
        "\"d\":\"AU8Vy9M8E_A7uebGdQwbavt_fWp2QmiB5oDEti9ayVlgFr2cTLkWfiL9Y9GCVM1a2-fqxn8S6Uf29Ww6lHngFCIx\"," \
        "\"key_ops\":[\"deriveKey\"],\"kty\":\"EC\","                                               \
        "\"x\":\"AU_IhdJjyyGosi2G_x5s-FFeZKOYCYMa0yLL6pZEkZ2DKb9M5LgbOUjUSAJUnasSGvXfn5OhE65T_aP1q3URILDr\"," \
        "\"y\":\"APjZnrIOB0VHsvV5RrgUEB_XM6uEdXHZhjqAfMWBqvbdt4FQx7g02WY1rbH2O-UaKK48wkychF8JG7JKoWFKD4St\"}"

#define KAT_S1 "1uJ3UwOJJlMZejG0YwuF7q4l7Ac"
#define KAT_S224 "sTYJ7TODAmsBOmd0AnzUe-3rXUvF8KbttDy73Q"
#define KAT_S256 "V7oXBOVmKffpyzrnjjdCPrvT9kqUkZJYzzUjgD7gTaE"
#define KAT_S384 "QMi6DfpWbjBGfQn--DYcst0Woch58S449d_SZA9mA8OYlOXlB9YHtwry_2_mRM5y"
#define KAT_S512 "rcQM5jpX4JbwrqSyDTqEWI28c_rjTmeAZE-L0yLNhC6FBtruoJrm3gz6mp6glG9MCILgG17uh4BjgVE6GW6ofA"

/* A client point X (the public half of another generated key) and
 * Y = dX for the key above: computed with plain Python integer arithmetic
 * on P-521 (double-and-add) and checked with `jose jwk exc`. */
#define KAT_REC_X "ABnK25EQdnaAfdjJiB4rs7vupxG0LLhA-bXnPLK26-1CXyRA_g1ZgVhS8Pac8CQcFY08sUWDTM2b4Afm5gceK8hJ"
#define KAT_REC_Y "AXOlkxyHmoIp575eftbRMyC0TKng5uXc2Q0n5SUdVhqwq7EEZRe1rFdRkMpwE71Jt1oyy67LyKuLel2n7XyLDpFj"
#define KAT_REC_ANSWER_X "AGtCNArNCMNAQeppKwiybZahy5JXXcE_spu0LgnDxNyMzbo_7u2ZsLNuNGB2y1X8AferbgKi8E-dCZzWsgioSBD8"
#define KAT_REC_ANSWER_Y "AGWbigudCmUY9EGxpWHYoQgt23_VFKSUvowKPWYc5BFnWZq6IrL3yBRMuZoaqoHhG_Gj5xS5w9AatsZLg-EGvKTm"
