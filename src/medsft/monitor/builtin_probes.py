"""The built-in general probe set: everyday chat prompts, half English, half Chinese.

A model fine-tuned on medical data should still answer these as well as its base model
did. The monitor asks them during training and compares base and tuned answers on
answer length, accuracy on the keyed probes and drift.

Each probe is a plain dict:
  id        "en-001" / "zh-001"
  language  "en" | "zh"
  category  "instruction" | "explanation" | "list" | "reasoning" | "knowledge" | "writing"
  question  the prompt sent to the model
  key       for prompts with one checkable answer, the short string a correct answer
            must contain (matched case- and punctuation-insensitively as a substring);
            None for open-ended prompts
  reference a complete answer of realistic length, for reading base and tuned answers
            side by side and as a length reference

Keys never appear in their own question, so an answer that only echoes the question
does not score. Numeric keys stay below 1000 so that "1,000"-style digit grouping in an
answer cannot break the match.
"""

from __future__ import annotations

CATEGORIES = ("instruction", "explanation", "list", "reasoning", "knowledge", "writing")
LANGUAGES = ("en", "zh")

GENERAL_PROBES: list[dict] = [
    # ---------------------------------------------------------------- English: knowledge
    {
        "id": "en-001", "language": "en", "category": "knowledge",
        "question": "What is the capital of Australia?",
        "key": "Canberra",
        "reference": "The capital of Australia is Canberra. Many people guess Sydney or Melbourne, "
                     "which are the largest cities, but Canberra was purpose-built as a compromise "
                     "between the two and has been the seat of the federal government since 1927.",
    },
    {
        "id": "en-002", "language": "en", "category": "knowledge",
        "question": "Which planet is the largest in our solar system?",
        "key": "Jupiter",
        "reference": "Jupiter is the largest planet in our solar system. It is a gas giant made mostly "
                     "of hydrogen and helium, with a diameter about 11 times that of Earth and more "
                     "mass than all the other planets combined.",
    },
    {
        "id": "en-003", "language": "en", "category": "knowledge",
        "question": "Who wrote the play \"Romeo and Juliet\"?",
        "key": "Shakespeare",
        "reference": "\"Romeo and Juliet\" was written by William Shakespeare, probably in the mid-1590s. "
                     "It is a tragedy about two young lovers from feuding families in Verona and is one "
                     "of his most frequently performed plays.",
    },
    {
        "id": "en-004", "language": "en", "category": "knowledge",
        "question": "What is the largest ocean on Earth?",
        "key": "Pacific",
        "reference": "The Pacific Ocean is the largest ocean on Earth. It covers roughly a third of the "
                     "planet's surface, more than all the land area combined, and it is also the deepest "
                     "ocean, containing the Mariana Trench.",
    },
    {
        "id": "en-005", "language": "en", "category": "knowledge",
        "question": "At what temperature in degrees Celsius does water boil at sea level?",
        "key": "100",
        "reference": "At sea level, water boils at 100 degrees Celsius (212 degrees Fahrenheit). At "
                     "higher altitudes the air pressure is lower, so water boils at a lower temperature.",
    },
    {
        "id": "en-006", "language": "en", "category": "knowledge",
        "question": "In which year did humans first land on the Moon?",
        "key": "1969",
        "reference": "Humans first landed on the Moon in 1969. On July 20 of that year, NASA's Apollo 11 "
                     "mission set down the lunar module, and Neil Armstrong and Buzz Aldrin became the "
                     "first people to walk on the lunar surface.",
    },
    {
        "id": "en-007", "language": "en", "category": "knowledge",
        "question": "What is the hardest naturally occurring substance?",
        "key": "diamond",
        "reference": "Diamond is the hardest naturally occurring substance. It is a form of pure carbon "
                     "in which each atom is strongly bonded to four others, and it scores 10, the top of "
                     "the Mohs hardness scale.",
    },
    {
        "id": "en-008", "language": "en", "category": "knowledge",
        "question": "Which chemical element has atomic number 1?",
        "key": "hydrogen",
        "reference": "Hydrogen has atomic number 1: each of its atoms has a single proton. It is the "
                     "lightest element and the most abundant one in the universe.",
    },
    {
        "id": "en-009", "language": "en", "category": "knowledge",
        "question": "Who painted the Mona Lisa?",
        "key": "Vinci",
        "reference": "The Mona Lisa was painted by Leonardo da Vinci, the Italian Renaissance artist, in "
                     "the early 16th century. It hangs in the Louvre in Paris and is one of the most "
                     "famous paintings in the world.",
    },
    {
        "id": "en-010", "language": "en", "category": "knowledge",
        "question": "What is the longest river in South America?",
        "key": "Amazon",
        "reference": "The Amazon is the longest river in South America. It flows roughly 6,400 km from "
                     "the Andes in Peru across Brazil to the Atlantic Ocean, and it carries more water "
                     "than any other river in the world.",
    },
    {
        "id": "en-011", "language": "en", "category": "knowledge",
        "question": "What is the freezing point of water in degrees Fahrenheit?",
        "key": "32",
        "reference": "Water freezes at 32 degrees Fahrenheit, which is 0 degrees Celsius, under normal "
                     "atmospheric pressure.",
    },
    {
        "id": "en-012", "language": "en", "category": "knowledge",
        "question": "In which country is the city of Kyoto?",
        "key": "Japan",
        "reference": "Kyoto is in Japan. It was the country's imperial capital for more than a thousand "
                     "years and is famous for its temples, shrines and traditional gardens.",
    },
    {
        "id": "en-013", "language": "en", "category": "knowledge",
        "question": "What currency is used in the United Kingdom?",
        "key": "pound",
        "reference": "The United Kingdom uses the pound sterling (GBP), usually just called the pound. "
                     "One pound is divided into 100 pence.",
    },
    # ---------------------------------------------------------------- English: reasoning
    {
        "id": "en-014", "language": "en", "category": "reasoning",
        "question": "What is 17 times 3?",
        "key": "51",
        "reference": "17 times 3 is 51. You can check it by splitting it up: 10 × 3 = 30 and 7 × 3 = 21, "
                     "and 30 + 21 = 51.",
    },
    {
        "id": "en-015", "language": "en", "category": "reasoning",
        "question": "A train leaves at 2:15 pm and the trip takes 1 hour and 50 minutes. What time does it arrive?",
        "key": "4:05",
        "reference": "The train arrives at 4:05 pm. Adding 1 hour to 2:15 gives 3:15, and adding "
                     "50 more minutes gives 4:05.",
    },
    {
        "id": "en-016", "language": "en", "category": "reasoning",
        "question": "A shirt costs $40 and is on sale for 25% off. What is the sale price?",
        "key": "30",
        "reference": "The sale price is $30. 25% of $40 is $10, and $40 − $10 = $30.",
    },
    {
        "id": "en-017", "language": "en", "category": "reasoning",
        "question": "Tom has 3 boxes with 12 pencils in each box. He gives away 8 pencils. How many pencils does he have left?",
        "key": "28",
        "reference": "Tom has 28 pencils left. He starts with 3 × 12 = 36 pencils, and 36 − 8 = 28.",
    },
    {
        "id": "en-018", "language": "en", "category": "reasoning",
        "question": "If today is Wednesday, what day of the week will it be in 10 days?",
        "key": "Saturday",
        "reference": "It will be Saturday. Seven days from Wednesday is Wednesday again, and three more "
                     "days after that (Thursday, Friday, Saturday) brings you to Saturday.",
    },
    {
        "id": "en-019", "language": "en", "category": "reasoning",
        "question": "What is 15% of 80?",
        "key": "12",
        "reference": "15% of 80 is 12. 10% of 80 is 8 and 5% is 4, so 15% is 8 + 4 = 12.",
    },
    {
        "id": "en-020", "language": "en", "category": "reasoning",
        "question": "A rectangle is 8 cm long and 5 cm wide. What is its area?",
        "key": "40",
        "reference": "The area is 40 square centimeters. The area of a rectangle is length times width: "
                     "8 cm × 5 cm = 40 cm².",
    },
    {
        "id": "en-021", "language": "en", "category": "reasoning",
        "question": "I have 5 apples. I eat 2 and then buy a dozen more. How many apples do I have now?",
        "key": "15",
        "reference": "You have 15 apples. After eating 2 you have 5 − 2 = 3, and a dozen is 12, "
                     "so 3 + 12 = 15.",
    },
    {
        "id": "en-022", "language": "en", "category": "reasoning",
        "question": "How many minutes are there in two and a half hours?",
        "key": "150",
        "reference": "There are 150 minutes in two and a half hours. Two hours is 2 × 60 = 120 minutes, "
                     "and half an hour is 30 minutes, so 120 + 30 = 150.",
    },
    {
        "id": "en-023", "language": "en", "category": "reasoning",
        "question": "What is the next number in the sequence 2, 6, 18, 54, ...?",
        "key": "162",
        "reference": "The next number is 162. Each term is three times the previous one "
                     "(2, 6, 18, 54), so the next term is 54 × 3 = 162.",
    },
    # ---------------------------------------------------------------- English: instruction
    {
        "id": "en-024", "language": "en", "category": "instruction",
        "question": "Translate \"Good morning, how are you?\" into French.",
        "key": "Bonjour",
        "reference": "In French: \"Bonjour, comment allez-vous ?\" This is the polite form; with a friend "
                     "or family member you would more often say \"Bonjour, comment vas-tu ?\" or simply "
                     "\"Salut, ça va ?\"",
    },
    {
        "id": "en-025", "language": "en", "category": "instruction",
        "question": "Rewrite this sentence in a more formal tone: \"Hey, can you send me the report asap?\"",
        "key": None,
        "reference": "\"Hello, could you please send me the report at your earliest convenience?\" "
                     "Another option: \"I would appreciate it if you could send me the report as soon "
                     "as possible.\"",
    },
    {
        "id": "en-026", "language": "en", "category": "instruction",
        "question": "Summarize this in one sentence: \"The city council met on Monday to discuss the new park. "
                    "Residents asked for more trees and a playground. The council agreed to add both and "
                    "said construction will start in the spring.\"",
        "key": None,
        "reference": "After residents asked for more trees and a playground at Monday's meeting, the city "
                     "council agreed to add both to the new park, with construction starting in the spring.",
    },
    {
        "id": "en-027", "language": "en", "category": "instruction",
        "question": "Turn these errands into a numbered to-do list: buy milk, pay the electricity bill, "
                    "call Mom, pick up the package.",
        "key": None,
        "reference": "Here is your to-do list:\n1. Buy milk\n2. Pay the electricity bill\n3. Call Mom\n"
                     "4. Pick up the package",
    },
    # ---------------------------------------------------------------- English: explanation
    {
        "id": "en-028", "language": "en", "category": "explanation",
        "question": "Explain what compound interest is in simple terms.",
        "key": None,
        "reference": "Compound interest is interest earned on both your original money and on the "
                     "interest it has already earned. For example, if you save $100 at 10% a year, you "
                     "have $110 after one year, and in the second year you earn 10% on $110, giving $121. "
                     "Because the base keeps growing, savings grow faster over time, which is why starting "
                     "early matters. The same effect works against you on debts such as credit cards.",
    },
    {
        "id": "en-029", "language": "en", "category": "explanation",
        "question": "Why is the sky blue?",
        "key": None,
        "reference": "The sky looks blue because of the way sunlight is scattered by the gases in the "
                     "atmosphere. Sunlight contains all colors, but shorter wavelengths such as blue are "
                     "scattered much more strongly by air molecules than longer wavelengths such as red "
                     "(this is called Rayleigh scattering). That scattered blue light reaches our eyes from "
                     "every direction, so the whole sky appears blue. At sunrise and sunset the light "
                     "travels through more air, more blue is scattered away, and the sky turns orange and red.",
    },
    {
        "id": "en-030", "language": "en", "category": "explanation",
        "question": "What is the difference between weather and climate?",
        "key": None,
        "reference": "Weather is the state of the atmosphere at a particular place and time: today's "
                     "temperature, rain, wind or sunshine. Climate is the average pattern of weather in a "
                     "region over a long period, usually 30 years or more. In short, weather is what you get "
                     "on a given day, while climate is what you can expect in general; a cold day does not "
                     "change a region's climate.",
    },
    {
        "id": "en-031", "language": "en", "category": "explanation",
        "question": "What is machine learning? Explain it to a beginner.",
        "key": None,
        "reference": "Machine learning is a way of building computer programs that learn from examples "
                     "instead of following rules written by hand. You show the program lots of data, for "
                     "instance thousands of emails labeled \"spam\" or \"not spam\", and it finds patterns "
                     "that let it make predictions about new examples it has never seen. It is used in "
                     "things like recommendations, voice assistants, photo tagging and translation. The "
                     "quality of the results depends heavily on the quality and amount of the data.",
    },
    {
        "id": "en-032", "language": "en", "category": "explanation",
        "question": "How does a refrigerator keep food cold?",
        "key": None,
        "reference": "A refrigerator moves heat from the inside to the outside rather than creating cold. "
                     "A refrigerant liquid flows through coils inside the fridge and evaporates, absorbing "
                     "heat from the food compartment. A compressor then squeezes the vapor, which makes it "
                     "hot, and pumps it through coils at the back where it releases that heat into the "
                     "room and condenses back into a liquid. The cycle repeats, and a thermostat switches "
                     "the compressor on and off to hold the set temperature.",
    },
    # ---------------------------------------------------------------- English: list
    {
        "id": "en-033", "language": "en", "category": "list",
        "question": "List five tips for getting better sleep.",
        "key": None,
        "reference": "1. Keep a regular schedule: go to bed and wake up at the same time every day, even "
                     "on weekends.\n2. Make your bedroom dark, quiet and cool.\n3. Avoid caffeine in the "
                     "afternoon and evening, and don't eat a heavy meal right before bed.\n4. Put away "
                     "phones and screens for 30–60 minutes before sleep.\n5. Get regular exercise and some "
                     "daylight during the day, but avoid intense workouts late at night.",
    },
    {
        "id": "en-034", "language": "en", "category": "list",
        "question": "Give me three ways to reduce energy use at home.",
        "key": None,
        "reference": "1. Switch to LED bulbs and turn off lights and devices when you leave a room; unplug "
                     "chargers and electronics on standby.\n2. Adjust your thermostat by a degree or two "
                     "(lower in winter, higher in summer) and seal drafts around doors and windows.\n"
                     "3. Run the washing machine and dishwasher only with full loads, and wash clothes in "
                     "cold water when possible.",
    },
    {
        "id": "en-035", "language": "en", "category": "list",
        "question": "Name four programming languages and say what each is commonly used for.",
        "key": None,
        "reference": "1. Python: data analysis, machine learning, scripting and web back ends.\n"
                     "2. JavaScript: interactive web pages in the browser, and servers with Node.js.\n"
                     "3. Java: large business applications and Android apps.\n"
                     "4. C: operating systems, embedded devices and other software that must be fast and "
                     "close to the hardware.",
    },
    {
        "id": "en-036", "language": "en", "category": "list",
        "question": "What should I pack for a weekend camping trip? Give me a list of five essentials.",
        "key": None,
        "reference": "1. A tent with stakes, plus a sleeping bag and sleeping pad suited to the expected "
                     "temperatures.\n2. Layers of clothing and a waterproof jacket.\n3. Enough water (or a "
                     "way to purify it) and easy-to-cook food, with a stove or other cooking gear.\n4. A "
                     "flashlight or headlamp with spare batteries.\n5. A first-aid kit, sunscreen and insect "
                     "repellent.",
    },
    # ---------------------------------------------------------------- English: writing
    {
        "id": "en-037", "language": "en", "category": "writing",
        "question": "Write a short thank-you note to a colleague who helped me finish a project on time.",
        "key": None,
        "reference": "Hi Alex,\n\nThank you so much for your help with the project last week. Your quick "
                     "work on the data and your careful review made it possible for us to meet the deadline, "
                     "and the final result is much better because of you. I really appreciate you making "
                     "the time despite your own workload. Please let me know whenever I can return the "
                     "favor.\n\nBest regards,\nSam",
    },
    {
        "id": "en-038", "language": "en", "category": "writing",
        "question": "Write a four-line poem about autumn.",
        "key": None,
        "reference": "Golden leaves drift slowly to the ground,\nCrisp air carries woodsmoke all around,\n"
                     "The days grow short, the evenings cool and still,\nAs autumn paints in amber every hill.",
    },
    {
        "id": "en-039", "language": "en", "category": "writing",
        "question": "Write a polite email declining an invitation to a meeting on Friday.",
        "key": None,
        "reference": "Subject: Re: Meeting on Friday\n\nHi Jordan,\n\nThank you for the invitation to "
                     "Friday's meeting. Unfortunately, I have a prior commitment at that time and won't be "
                     "able to attend. I would be glad to review the notes afterwards, and please let me know "
                     "if there is anything you would like my input on beforehand.\n\nBest regards,\nTaylor",
    },
    # ---------------------------------------------------------------- Chinese: knowledge
    {
        "id": "zh-001", "language": "zh", "category": "knowledge",
        "question": "中国的首都是哪里？",
        "key": "北京",
        "reference": "中国的首都是北京。北京是全国的政治、文化和国际交往中心，有故宫、天安门、长城等众多名胜古迹。",
    },
    {
        "id": "zh-002", "language": "zh", "category": "knowledge",
        "question": "世界上海拔最高的山峰是哪座？",
        "key": "珠穆朗玛",
        "reference": "世界上海拔最高的山峰是珠穆朗玛峰，位于中国和尼泊尔边境的喜马拉雅山脉。"
                     "2020年中尼两国公布的最新高程为8848.86米。",
    },
    {
        "id": "zh-003", "language": "zh", "category": "knowledge",
        "question": "中国最长的河流是哪条？",
        "key": "长江",
        "reference": "中国最长的河流是长江，全长约6300公里，是亚洲第一长河、世界第三长河。"
                     "它发源于青藏高原，自西向东流经多个省份，最后在上海附近注入东海。",
    },
    {
        "id": "zh-004", "language": "zh", "category": "knowledge",
        "question": "《红楼梦》的作者是谁？",
        "key": "曹雪芹",
        "reference": "《红楼梦》的作者是清代作家曹雪芹。一般认为前八十回出自曹雪芹之手，"
                     "后四十回为他人续写，通行本由程伟元、高鹗整理刊印。它是中国古典四大名著之一。",
    },
    {
        "id": "zh-005", "language": "zh", "category": "knowledge",
        "question": "太阳系中离太阳最近的行星是哪一颗？",
        "key": "水星",
        "reference": "离太阳最近的行星是水星。它也是太阳系中最小的行星，没有卫星，"
                     "绕太阳公转一周大约只需要88天。",
    },
    {
        "id": "zh-006", "language": "zh", "category": "knowledge",
        "question": "水的化学式是什么？",
        "key": "H2O",
        "reference": "水的化学式是H2O，表示每个水分子由两个氢原子和一个氧原子组成。",
    },
    {
        "id": "zh-007", "language": "zh", "category": "knowledge",
        "question": "一天有多少小时？",
        "key": "24",
        "reference": "一天有24小时，也就是1440分钟、86400秒。这大致是地球自转一周所用的时间。",
    },
    {
        "id": "zh-008", "language": "zh", "category": "knowledge",
        "question": "端午节是农历的哪一天？",
        "key": "五月初五",
        "reference": "端午节是农历五月初五。这一天人们通常会吃粽子、赛龙舟、挂艾草，"
                     "传统上也有纪念战国时期诗人屈原的说法。",
    },
    {
        "id": "zh-009", "language": "zh", "category": "knowledge",
        "question": "“床前明月光，疑是地上霜”出自哪位诗人？",
        "key": "李白",
        "reference": "这两句诗出自唐代诗人李白的《静夜思》。全诗是：“床前明月光，疑是地上霜。"
                     "举头望明月，低头思故乡。”表达了游子的思乡之情。",
    },
    {
        "id": "zh-010", "language": "zh", "category": "knowledge",
        "question": "世界上国土面积最大的国家是哪个？",
        "key": "俄罗斯",
        "reference": "世界上国土面积最大的国家是俄罗斯，面积约1710万平方公里，横跨欧洲和亚洲两大洲。",
    },
    {
        "id": "zh-011", "language": "zh", "category": "knowledge",
        "question": "地球上面积最大的大洋是哪个？",
        "key": "太平洋",
        "reference": "地球上面积最大的大洋是太平洋。它约占地球表面积的三分之一，也是最深的大洋，"
                     "世界最深处马里亚纳海沟就在太平洋。",
    },
    {
        "id": "zh-012", "language": "zh", "category": "knowledge",
        "question": "中国古代的四大发明是什么？",
        "key": "指南针",
        "reference": "中国古代的四大发明是造纸术、指南针、火药和印刷术。它们对世界文明的发展产生了深远影响，"
                     "例如造纸术和印刷术极大地促进了知识的传播。",
    },
    {
        "id": "zh-013", "language": "zh", "category": "knowledge",
        "question": "一年有几个季节？",
        "key": "四",
        "reference": "一年有四个季节，分别是春、夏、秋、冬。不过在赤道附近等地区，季节变化并不明显，"
                     "有些地方更常分为旱季和雨季。",
    },
    {
        "id": "zh-014", "language": "zh", "category": "knowledge",
        "question": "秦始皇在哪一年统一了六国？",
        "key": "221",
        "reference": "秦始皇在公元前221年统一了六国，建立了中国历史上第一个大一统的中央集权王朝——秦朝，"
                     "并统一了文字、货币和度量衡。",
    },
    {
        "id": "zh-015", "language": "zh", "category": "knowledge",
        "question": "中国的陆地面积大约是多少平方公里？",
        "key": "960",
        "reference": "中国的陆地面积约为960万平方公里，是世界上面积最大的国家之一。"
                     "此外，中国还拥有广阔的海域。",
    },
    # ---------------------------------------------------------------- Chinese: reasoning
    {
        "id": "zh-016", "language": "zh", "category": "reasoning",
        "question": "小明有50元，买了一本18元的书和两支每支6元的笔，他还剩多少钱？",
        "key": "20",
        "reference": "小明还剩20元。两支笔一共6×2=12元，书和笔一共18+12=30元，50-30=20元。",
    },
    {
        "id": "zh-017", "language": "zh", "category": "reasoning",
        "question": "23乘以4等于多少？",
        "key": "92",
        "reference": "23乘以4等于92。可以这样算：20×4=80，3×4=12，80+12=92。",
    },
    {
        "id": "zh-018", "language": "zh", "category": "reasoning",
        "question": "一辆汽车每小时行驶80公里，3小时一共行驶多少公里？",
        "key": "240",
        "reference": "一共行驶240公里。路程等于速度乘以时间：80公里/小时×3小时=240公里。",
    },
    {
        "id": "zh-019", "language": "zh", "category": "reasoning",
        "question": "如果今天是星期一，再过15天是星期几？",
        "key": "星期二",
        "reference": "再过15天是星期二。一周有7天，15÷7=2余1，过了两个整周后还是星期一，"
                     "再往后推1天就是星期二。",
    },
    {
        "id": "zh-020", "language": "zh", "category": "reasoning",
        "question": "一个正方形的周长是36厘米，它的面积是多少平方厘米？",
        "key": "81",
        "reference": "面积是81平方厘米。正方形四条边相等，边长为36÷4=9厘米，面积为9×9=81平方厘米。",
    },
    {
        "id": "zh-021", "language": "zh", "category": "reasoning",
        "question": "一本书有120页，小红第一天读了全书的四分之一，第二天读了40页，还剩多少页没有读？",
        "key": "50",
        "reference": "还剩50页没有读。第一天读了120÷4=30页，两天共读了30+40=70页，120-70=50页。",
    },
    {
        "id": "zh-022", "language": "zh", "category": "reasoning",
        "question": "125加375等于多少？",
        "key": "500",
        "reference": "125加375等于500。个位5+5=10，十位2+7再加进位1得10，百位1+3再加进位1得5，结果是500。",
    },
    {
        "id": "zh-023", "language": "zh", "category": "reasoning",
        "question": "一个班有40名学生，其中女生占60%，男生有多少人？",
        "key": "16",
        "reference": "男生有16人。女生占60%，那么男生占40%，40×40%=16人（女生为40×60%=24人）。",
    },
    # ---------------------------------------------------------------- Chinese: instruction
    {
        "id": "zh-024", "language": "zh", "category": "instruction",
        "question": "把“Knowledge is power.”翻译成中文。",
        "key": "知识就是力量",
        "reference": "“Knowledge is power.”翻译成中文是：“知识就是力量。”这句话通常被认为出自英国哲学家弗朗西斯·培根。",
    },
    {
        "id": "zh-025", "language": "zh", "category": "instruction",
        "question": "把下面这句话改写得更礼貌一些：“把文件马上发给我。”",
        "key": None,
        "reference": "可以改写为：“麻烦您方便的时候尽快把文件发给我，谢谢！”"
                     "或者：“请问能否尽快将文件发送给我？非常感谢您的帮助。”",
    },
    {
        "id": "zh-026", "language": "zh", "category": "instruction",
        "question": "请用一句话概括下面这段话：“小区周末组织了一次垃圾分类宣传活动。志愿者向居民讲解了分类方法，"
                    "还发放了分类指南。很多居民表示以后会认真分类。”",
        "key": None,
        "reference": "小区周末开展垃圾分类宣传，志愿者讲解方法并发放指南，许多居民表示今后会认真分类。",
    },
    {
        "id": "zh-027", "language": "zh", "category": "instruction",
        "question": "请把下面的事项整理成一个编号清单：买牛奶、交电费、给妈妈打电话、取快递。",
        "key": None,
        "reference": "待办清单：\n1. 买牛奶\n2. 交电费\n3. 给妈妈打电话\n4. 取快递",
    },
    # ---------------------------------------------------------------- Chinese: explanation
    {
        "id": "zh-028", "language": "zh", "category": "explanation",
        "question": "请用通俗的语言解释一下什么是通货膨胀。",
        "key": None,
        "reference": "通货膨胀就是物价在一段时间内普遍、持续地上涨，同样的钱能买到的东西变少了。"
                     "比如几年前10元能买两碗面，现在只能买一碗，说明钱“变得不值钱”了。"
                     "通货膨胀常见的原因包括市场上的货币太多、需求增长太快或生产成本上升。"
                     "温和的通胀在经济中很常见，但通胀过高会让储蓄缩水、影响人们的生活。",
    },
    {
        "id": "zh-029", "language": "zh", "category": "explanation",
        "question": "天空为什么是蓝色的？",
        "key": None,
        "reference": "天空呈蓝色是因为大气对阳光的散射。阳光包含各种颜色的光，其中波长较短的蓝光"
                     "比波长较长的红光更容易被空气分子散射，这种现象叫瑞利散射。被散射的蓝光从天空的各个方向"
                     "进入我们的眼睛，所以天空看起来是蓝色的。日出和日落时，阳光穿过的大气更厚，"
                     "蓝光大多被散射掉了，天空就呈现橙红色。",
    },
    {
        "id": "zh-030", "language": "zh", "category": "explanation",
        "question": "什么是人工智能？请简单介绍一下。",
        "key": None,
        "reference": "人工智能（AI）是让计算机完成通常需要人类智能才能完成的任务的技术，比如理解语言、"
                     "识别图像、做出决策等。现在的人工智能大多基于机器学习，也就是让计算机从大量数据中"
                     "自己总结规律，而不是由人逐条编写规则。它已经广泛应用于语音助手、推荐系统、自动翻译、"
                     "自动驾驶等领域。",
    },
    {
        "id": "zh-031", "language": "zh", "category": "explanation",
        "question": "解释一下什么是温室效应。",
        "key": None,
        "reference": "温室效应是指大气中的二氧化碳、甲烷、水蒸气等温室气体让地球保持温暖的现象。"
                     "阳光照射到地面使地表升温，地表再向外辐射热量，温室气体会吸收其中一部分热量并重新向地面辐射，"
                     "就像温室的玻璃一样把热量留住。适度的温室效应使地球适合生命生存，但人类大量燃烧化石燃料"
                     "使温室气体增加，温室效应增强，导致全球变暖。",
    },
    {
        "id": "zh-032", "language": "zh", "category": "explanation",
        "question": "电动汽车和燃油车各有什么优缺点？",
        "key": None,
        "reference": "电动汽车的优点是使用成本低（电费比油费便宜、保养简单）、行驶安静、加速快，"
                     "行驶时没有尾气排放；缺点是购车价格往往较高、续航里程有限、充电时间较长，"
                     "而且依赖充电设施。燃油车的优点是加油快、续航长、加油站普及、技术成熟；"
                     "缺点是油费和保养费用较高，并且会排放尾气。选择时可以根据日常里程、能否方便充电和预算来决定。",
    },
    # ---------------------------------------------------------------- Chinese: list
    {
        "id": "zh-033", "language": "zh", "category": "list",
        "question": "列出三种提高学习效率的方法。",
        "key": None,
        "reference": "1. 制定明确的计划：把大目标拆成小任务，规定每段时间要完成的内容。\n"
                     "2. 专注学习：学习时把手机放远，可以用番茄工作法，学习25分钟后休息5分钟。\n"
                     "3. 及时复习和自测：按照遗忘规律定期复习，并通过做题或向别人讲解来检验是否真正掌握。",
    },
    {
        "id": "zh-034", "language": "zh", "category": "list",
        "question": "推荐五种适合新手养的室内植物。",
        "key": None,
        "reference": "1. 绿萝：耐阴、好养活，水培土培都可以。\n2. 吊兰：生长快，对光照要求不高。\n"
                     "3. 虎尾兰：非常耐旱，几周浇一次水就行。\n4. 龟背竹：叶形好看，喜欢散射光。\n"
                     "5. 多肉植物：耐旱，适合放在阳光充足的窗台，注意不要浇水过多。",
    },
    {
        "id": "zh-035", "language": "zh", "category": "list",
        "question": "给出四条保持良好睡眠的建议。",
        "key": None,
        "reference": "1. 作息规律：每天尽量在同一时间睡觉和起床，周末也不要相差太多。\n"
                     "2. 睡前少用电子产品：睡前半小时到一小时放下手机和电脑。\n"
                     "3. 注意饮食：下午和晚上少喝咖啡、浓茶，睡前不要吃得过饱。\n"
                     "4. 营造舒适的环境：卧室保持安静、黑暗、温度适宜，白天适量运动也有助于入睡。",
    },
    {
        "id": "zh-036", "language": "zh", "category": "list",
        "question": "列举三个中国传统节日，并简单说说它们的习俗。",
        "key": None,
        "reference": "1. 春节：农历正月初一，人们贴春联、放鞭炮、吃年夜饭、拜年、给孩子发压岁钱。\n"
                     "2. 中秋节：农历八月十五，家人团聚赏月、吃月饼。\n"
                     "3. 端午节：农历五月初五，吃粽子、赛龙舟、挂艾草。",
    },
    # ---------------------------------------------------------------- Chinese: writing
    {
        "id": "zh-037", "language": "zh", "category": "writing",
        "question": "写一段简短的生日祝福，送给一位好朋友。",
        "key": None,
        "reference": "亲爱的朋友，生日快乐！感谢这些年一路有你陪伴，无论开心还是难过，你总在我身边。"
                     "愿新的一岁里你身体健康、工作顺利，每天都有好心情，所有的愿望都能一一实现。"
                     "今天记得好好犒劳自己，我们改天一起庆祝！",
    },
    {
        "id": "zh-038", "language": "zh", "category": "writing",
        "question": "以“春天”为题写一首四行小诗。",
        "key": None,
        "reference": "《春天》\n微风轻拂柳丝长，\n细雨无声润草香。\n桃花含笑迎燕子，\n田野处处换新装。",
    },
    {
        "id": "zh-039", "language": "zh", "category": "writing",
        "question": "帮我写一封简短的请假邮件，家里有事需要请假一天。",
        "key": None,
        "reference": "主题：请假申请\n\n王经理您好：\n\n因家中有事需要处理，我想申请于明天（周五）请假一天。"
                     "手头的工作我已经安排妥当，紧急事项已交接给小李，如有需要也可以随时电话联系我。"
                     "给您添麻烦了，恳请批准，谢谢！\n\n此致\n敬礼\n\n张明",
    },
    {
        "id": "zh-040", "language": "zh", "category": "writing",
        "question": "为一家社区咖啡店写三条宣传语。",
        "key": None,
        "reference": "1. 一杯好咖啡，一段慢时光。\n2. 就在你家楼下，温暖每一个清晨。\n"
                     "3. 邻里相聚的地方，咖啡香里话家常。",
    },
]


def general_probes(language: str | None = None) -> list[dict]:
    """Copies of the built-in general probes, only those in `language` ("en" or "zh") when given."""
    if language is not None and language not in LANGUAGES:
        raise ValueError(f"unknown probe language {language!r}: expected one of {', '.join(LANGUAGES)}")
    return [dict(p) for p in GENERAL_PROBES if language is None or p["language"] == language]
